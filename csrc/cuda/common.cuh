// CUDA-side helpers: error reporting and the vectorised elementwise kernel behind every map-style op.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastercache/common.h"

namespace fastercache {
namespace cuda {

// Throws a RuntimeError-to-be that names the op and says plainly when there is no driver or device.
inline void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  std::string msg = std::string("fastercache CUDA ") + what + ": " + cudaGetErrorName(err) + ": " +
                    cudaGetErrorString(err);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorNotSupported ||
      err == cudaErrorInitializationError || err == cudaErrorUnknown)
    msg += " (no usable CUDA driver or device: the _cuda module needs an NVIDIA GPU at run time)";
  throw std::runtime_error(msg);
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// 16 bytes of T, moved with one 128-bit load or store (LDG.E.128 / STG.E.128).
template <class T> struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <int N, class T> struct Ptrs { const T* p[N > 0 ? N : 1]; };
template <int N> struct ScalarPtrs { const float* p[N > 0 ? N : 1]; };

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

// out[i] = F::apply(x, s). When every pointer is 16-byte aligned the body runs on Packs and a scalar tail
// handles the last n % Pack::kN elements; otherwise every element is scalar. Indices are int64.
template <class F, class T, bool kVec>
__global__ void __launch_bounds__(kThreads) map_kernel(T* __restrict__ out, Ptrs<F::kIn, T> in,
                                                       ScalarPtrs<F::kScalars> sp, int64_t n) {
  float s[F::kScalars > 0 ? F::kScalars : 1];
#pragma unroll
  for (int k = 0; k < F::kScalars; ++k) s[k] = __ldg(sp.p[k]);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (kVec) {
    constexpr int V = Pack<T>::kN;
    const int64_t nvec = n / V;
    for (int64_t i = tid; i < nvec; i += stride) {
      Pack<T> x[F::kIn];
#pragma unroll
      for (int k = 0; k < F::kIn; ++k) x[k] = reinterpret_cast<const Pack<T>*>(in.p[k])[i];
      Pack<T> o;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        float xf[F::kIn];
#pragma unroll
        for (int k = 0; k < F::kIn; ++k) xf[k] = to_float(x[k].v[j]);
        o.v[j] = from_float<T>(F::apply(xf, s));
      }
      reinterpret_cast<Pack<T>*>(out)[i] = o;
    }
    done = nvec * V;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    float xf[F::kIn];
#pragma unroll
    for (int k = 0; k < F::kIn; ++k) xf[k] = to_float(in.p[k][i]);
    out[i] = from_float<T>(F::apply(xf, s));
  }
}

template <class F, class T>
void launch_map(T* out, const T* const* in, const float* const* scalars, int64_t n, cudaStream_t stream,
                const char* what) {
  if (n <= 0) return;
  Ptrs<F::kIn, T> p{};
  ScalarPtrs<F::kScalars> s{};
  bool vec = aligned16(out);
  for (int k = 0; k < F::kIn; ++k) {
    p.p[k] = in[k];
    vec = vec && aligned16(in[k]);
  }
  for (int k = 0; k < F::kScalars; ++k) s.p[k] = scalars[k];
  const int64_t work = vec ? (n + Pack<T>::kN - 1) / Pack<T>::kN : n;
  const int64_t blocks = std::min<int64_t>(kMaxBlocks, (work + kThreads - 1) / kThreads);
  if (vec)
    map_kernel<F, T, true><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, p, s, n);
  else
    map_kernel<F, T, false><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, p, s, n);
  check(cudaGetLastError(), what);
}

// CUDA has its own fp16/bf16 types only for arithmetic; storage stays f16/bf16 words as on the host.
template <class F>
void launch_map_dtype(DType dt, void* out, const void* const* in, const float* const* scalars, int64_t n,
                      void* stream, const char* what) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* typed[F::kIn];
    for (int k = 0; k < F::kIn; ++k) typed[k] = static_cast<const T*>(in[k]);
    launch_map<F>(static_cast<T*>(out), typed, scalars, n, as_stream(stream), what);
  });
}

}  // namespace cuda
}  // namespace fastercache
