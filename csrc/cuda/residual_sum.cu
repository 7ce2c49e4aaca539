#include "common.cuh"
#include "fastercache/launchers.h"

namespace fastercache {
namespace cuda {

namespace {

// The residuals' pointers travel in the kernel's parameter space (512 bytes for 64 pointers, well under the
// 4 KiB limit); the loop over them is unrolled to the capacity so every pointer is a static parameter load.
template <class T> struct ResidualPtrs {
  const T* p[kResidualSumCapacity];
  int count;
};

// out = base + r[0] + ... + r[count - 1], fp32 in list order. TB (base) and TO (out) are T or, when the
// residuals are summed in several launches, the fp32 workspace.
template <class TO, class TB, class T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    residual_sum_kernel(TO* __restrict__ out, const TB* __restrict__ base, ResidualPtrs<T> r, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (kVec) {
    constexpr int V = vec_width<TO, TB, T>();
    const int64_t nvec = n / V;
    for (int64_t i = tid; i < nvec; i += stride) {
      const Vec<TB, V> xb = load_vec<V>(base, i);
      float acc[V];
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] = to_float(xb.get(j));
#pragma unroll
      for (int k = 0; k < kResidualSumCapacity; ++k) {
        if (k >= r.count) break;
        const Vec<T, V> x = load_vec<V>(r.p[k], i);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += to_float(x.get(j));
      }
      Vec<TO, V> o;
#pragma unroll
      for (int j = 0; j < V; ++j) o.set(j, from_float<TO>(acc[j]));
      store_vec<V>(out, i, o);
    }
    done = nvec * V;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    float acc = to_float(base[i]);
#pragma unroll
    for (int k = 0; k < kResidualSumCapacity; ++k) {
      if (k >= r.count) break;
      acc += to_float(r.p[k][i]);
    }
    out[i] = from_float<TO>(acc);
  }
}

template <class TO, class TB, class T>
void launch_chunk(TO* out, const TB* base, const T* const* res, int count, int64_t n, cudaStream_t stream) {
  ResidualPtrs<T> r{};
  r.count = count;
  bool vec = aligned16(out) && aligned16(base);
  for (int k = 0; k < count; ++k) {
    r.p[k] = res[k];
    vec = vec && aligned16(res[k]);
  }
  constexpr int V = vec_width<TO, TB, T>();
  const unsigned grid = grid_for(vec ? (n + V - 1) / V : n);
  if (vec)
    residual_sum_kernel<TO, TB, T, true><<<grid, kThreads, 0, stream>>>(out, base, r, n);
  else
    residual_sum_kernel<TO, TB, T, false><<<grid, kThreads, 0, stream>>>(out, base, r, n);
  check(cudaGetLastError(), "residual_sum");
}

}  // namespace

void residual_sum(DType dt, void* out, const void* x, PtrArray residuals, int64_t n, float* workspace,
                  void* stream) {
  const int count = residuals.count;
  if (n <= 0) return;
  if (count > kResidualSumCapacity && workspace == nullptr)
    throw std::invalid_argument("fastercache CUDA residual_sum: more than " +
                                std::to_string(kResidualSumCapacity) + " residuals need an fp32 workspace");
  const cudaStream_t s = as_stream(stream);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* const* res = reinterpret_cast<const T* const*>(residuals.data);
    T* o = static_cast<T*>(out);
    const T* xt = static_cast<const T*>(x);
    if (count <= kResidualSumCapacity) {
      launch_chunk(o, xt, res, count, n, s);
      return;
    }
    // Beyond one launch's capacity: x + the first chunk into the fp32 workspace, middle chunks in place there,
    // the last chunk from the workspace into out. fp32 throughout, so the sum is the one-pass sum.
    launch_chunk(workspace, xt, res, kResidualSumCapacity, n, s);
    int k = kResidualSumCapacity;
    for (; count - k > kResidualSumCapacity; k += kResidualSumCapacity)
      launch_chunk(workspace, static_cast<const float*>(workspace), res + k, kResidualSumCapacity, n, s);
    launch_chunk(o, static_cast<const float*>(workspace), res + k, count - k, n, s);
  });
}

}  // namespace cuda
}  // namespace fastercache
