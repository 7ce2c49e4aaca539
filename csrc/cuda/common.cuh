// CUDA-side helpers: error reporting and the vectorised elementwise kernel behind every map-style op.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastercache/common.h"
#include "fastercache/elementwise.h"

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

// Elements per thread and step on the vectorised paths: 16 bytes of the narrowest storage type involved, so
// every access, of that type and of the wider ones alike, is a whole number of 128-bit loads or stores.
template <class T, class... Ts> constexpr int vec_width() {
  size_t m = sizeof(T);
  ((m = sizeof(Ts) < m ? sizeof(Ts) : m), ...);
  return static_cast<int>(16 / m);
}

// V elements of T held as V * sizeof(T) / 16 Packs.
template <class T, int V> struct Vec {
  static constexpr int kPacks = V * static_cast<int>(sizeof(T)) / 16;
  static_assert(kPacks >= 1 && kPacks * 16 == V * static_cast<int>(sizeof(T)), "V * sizeof(T) must be 16k");
  Pack<T> p[kPacks];
  __device__ __forceinline__ T get(int j) const { return p[j / Pack<T>::kN].v[j % Pack<T>::kN]; }
  __device__ __forceinline__ void set(int j, T x) { p[j / Pack<T>::kN].v[j % Pack<T>::kN] = x; }
};

// Vector i (elements [i * V, i * V + V)) of a 16-byte aligned array, one 128-bit access per Pack.
template <int V, class T> __device__ __forceinline__ Vec<T, V> load_vec(const T* base, int64_t i) {
  Vec<T, V> r;
  const Pack<T>* src = reinterpret_cast<const Pack<T>*>(base) + i * Vec<T, V>::kPacks;
#pragma unroll
  for (int k = 0; k < Vec<T, V>::kPacks; ++k) r.p[k] = src[k];
  return r;
}

template <int V, class T> __device__ __forceinline__ void store_vec(T* base, int64_t i, const Vec<T, V>& v) {
  Pack<T>* dst = reinterpret_cast<Pack<T>*>(base) + i * Vec<T, V>::kPacks;
#pragma unroll
  for (int k = 0; k < Vec<T, V>::kPacks; ++k) dst[k] = v.p[k];
}

// out[i] = F::apply(x, s) with the first kIn - kInB inputs of type TA, the last kInB of type TB and the output
// of type TO (all one type for most ops). When every pointer is 16-byte aligned the body runs on Vecs and a
// scalar tail handles the rest; otherwise every element is scalar. Indices are int64.
template <class F, class TO, class TA, class TB, bool kVec>
__global__ void __launch_bounds__(kThreads)
    map_kernel(TO* __restrict__ out, Ptrs<F::kIn - second_inputs<F>::value, TA> a,
               Ptrs<second_inputs<F>::value, TB> b, ScalarPtrs<F::kScalars> sp, int64_t n) {
  constexpr int kB = second_inputs<F>::value;
  constexpr int kA = F::kIn - kB;
  float s[F::kScalars > 0 ? F::kScalars : 1];
#pragma unroll
  for (int k = 0; k < F::kScalars; ++k) s[k] = __ldg(sp.p[k]);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (kVec) {
    constexpr int V = vec_width<TO, TA, TB>();
    const int64_t nvec = n / V;
    for (int64_t i = tid; i < nvec; i += stride) {
      Vec<TA, V> xa[kA > 0 ? kA : 1];
      Vec<TB, V> xb[kB > 0 ? kB : 1];
#pragma unroll
      for (int k = 0; k < kA; ++k) xa[k] = load_vec<V>(a.p[k], i);
#pragma unroll
      for (int k = 0; k < kB; ++k) xb[k] = load_vec<V>(b.p[k], i);
      Vec<TO, V> o;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        float xf[F::kIn];
#pragma unroll
        for (int k = 0; k < kA; ++k) xf[k] = to_float(xa[k].get(j));
#pragma unroll
        for (int k = 0; k < kB; ++k) xf[kA + k] = to_float(xb[k].get(j));
        o.set(j, from_float<TO>(F::apply(xf, s)));
      }
      store_vec<V>(out, i, o);
    }
    done = nvec * V;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    float xf[F::kIn];
#pragma unroll
    for (int k = 0; k < kA; ++k) xf[k] = to_float(a.p[k][i]);
#pragma unroll
    for (int k = 0; k < kB; ++k) xf[kA + k] = to_float(b.p[k][i]);
    out[i] = from_float<TO>(F::apply(xf, s));
  }
}

inline unsigned grid_for(int64_t work) {
  return static_cast<unsigned>(std::min<int64_t>(kMaxBlocks, (work + kThreads - 1) / kThreads));
}

template <class F, class TO, class TA, class TB>
void launch_map_mixed(TO* out, const TA* const* a, const TB* const* b, const float* const* scalars, int64_t n,
                      cudaStream_t stream, const char* what) {
  if (n <= 0) return;
  constexpr int kB = second_inputs<F>::value;
  constexpr int kA = F::kIn - kB;
  Ptrs<kA, TA> pa{};
  Ptrs<kB, TB> pb{};
  ScalarPtrs<F::kScalars> s{};
  bool vec = aligned16(out);
  for (int k = 0; k < kA; ++k) {
    pa.p[k] = a[k];
    vec = vec && aligned16(a[k]);
  }
  for (int k = 0; k < kB; ++k) {
    pb.p[k] = b[k];
    vec = vec && aligned16(b[k]);
  }
  for (int k = 0; k < F::kScalars; ++k) s.p[k] = scalars[k];
  constexpr int V = vec_width<TO, TA, TB>();
  const int64_t work = vec ? (n + V - 1) / V : n;
  if (vec)
    map_kernel<F, TO, TA, TB, true><<<grid_for(work), kThreads, 0, stream>>>(out, pa, pb, s, n);
  else
    map_kernel<F, TO, TA, TB, false><<<grid_for(work), kThreads, 0, stream>>>(out, pa, pb, s, n);
  check(cudaGetLastError(), what);
}

template <class F, class T>
void launch_map(T* out, const T* const* in, const float* const* scalars, int64_t n, cudaStream_t stream,
                const char* what) {
  launch_map_mixed<F, T, T, T>(out, in, in + (F::kIn - second_inputs<F>::value), scalars, n, stream, what);
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

// The output and the first inputs in `dt`, the last kInB inputs in `dt_b`.
template <class F>
void launch_map_mixed_dtype(DType dt, DType dt_b, void* out, const void* const* in, const float* const* scalars,
                            int64_t n, void* stream, const char* what) {
  dispatch_mixed<F>(dt, dt_b, in, [&](auto tag, auto tag_b, auto a, auto b) {
    using T = decltype(tag);
    launch_map_mixed<F, T, T, decltype(tag_b)>(static_cast<T*>(out), a, b, scalars, n, as_stream(stream), what);
  });
}

// Every input in `in_dt`, the output in `out_dt`.
template <class F>
void launch_map_cast_dtype(DType out_dt, DType in_dt, void* out, const void* const* in,
                           const float* const* scalars, int64_t n, void* stream, const char* what) {
  constexpr int kA = F::kIn - second_inputs<F>::value;
  dispatch_dtype(out_dt, [&](auto tag_o) {
    using TO = decltype(tag_o);
    dispatch_dtype(in_dt, [&](auto tag) {
      using T = decltype(tag);
      const T* typed[F::kIn];
      for (int k = 0; k < F::kIn; ++k) typed[k] = static_cast<const T*>(in[k]);
      launch_map_mixed<F, TO, T, T>(static_cast<TO*>(out), typed, typed + kA, scalars, n, as_stream(stream),
                                    what);
    });
  });
}

}  // namespace cuda
}  // namespace fastercache
