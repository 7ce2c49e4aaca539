#include "fastercache/launchers.h"
#include "reduce.cuh"

namespace fastercache {
namespace cuda {

namespace {

constexpr int64_t kItem = 16384;  // elements per first-stage block, as feature_diff

// The step: as many elements as make a 16-byte load of the narrower of the two dtypes.
template <class T, class C> constexpr int step() { return 16 / (sizeof(T) < sizeof(C) ? sizeof(T) : sizeof(C)); }

// r = output - input (fp32); sums the metric terms of (r, cache) and writes r into cache (rounded to C).
template <Metric M, class T, class C, bool kVec>
__global__ void __launch_bounds__(kThreads) update_partials_kernel(const T* __restrict__ output,
                                                                   const T* __restrict__ input,
                                                                   C* __restrict__ cache, int64_t n,
                                                                   float* __restrict__ ws) {
  const int64_t item = blockIdx.x;
  const int64_t begin = item * kItem;
  const int64_t len = min(kItem, n - begin);
  const T* po = output + begin;
  const T* pi = input + begin;
  C* pc = cache + begin;
  float s[kDiffSums] = {0.0f, 0.0f, 0.0f};
  int64_t done = 0;
  if (kVec) {
    constexpr int V = step<T, C>();
    using VT = RVec<T, V>;
    using VC = RVec<C, V>;
    const int64_t nvec = len / V;
#pragma unroll 2
    for (int64_t i = threadIdx.x; i < nvec; i += kThreads) {
      const VT o = reinterpret_cast<const VT*>(po)[i];
      const VT x = reinterpret_cast<const VT*>(pi)[i];
      VC c = reinterpret_cast<const VC*>(pc)[i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float r = to_float(o.v[j]) - to_float(x.v[j]);
        DiffTerm<M>::add(r, to_float(c.v[j]), s[0], s[1], s[2]);
        c.v[j] = from_float<C>(r);
      }
      reinterpret_cast<VC*>(pc)[i] = c;
    }
    done = nvec * V;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads) {
    const float r = to_float(po[i]) - to_float(pi[i]);
    DiffTerm<M>::add(r, to_float(pc[i]), s[0], s[1], s[2]);
    pc[i] = from_float<C>(r);
  }
  block_sum<kDiffSums>(s);
  if (threadIdx.x == 0)
#pragma unroll
    for (int k = 0; k < kDiffSums; ++k) ws[item * kDiffSums + k] = s[k];
}

bool aligned(const void* p, int bytes) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; }

template <Metric M, class T, class C>
void launch(float* out, const T* output, const T* input, C* cache, bool partials, int64_t n, float* ws,
            cudaStream_t stream) {
  const int64_t items = (n + kItem - 1) / kItem;
  if (items > 0) {
    check_grid(items, "residual_diff_update");
    constexpr int V = step<T, C>();
    const bool vec = aligned(output, V * sizeof(T)) && aligned(input, V * sizeof(T)) && aligned(cache, V * sizeof(C));
    if (vec)
      update_partials_kernel<M, T, C, true>
          <<<static_cast<unsigned>(items), kThreads, 0, stream>>>(output, input, cache, n, ws);
    else
      update_partials_kernel<M, T, C, false>
          <<<static_cast<unsigned>(items), kThreads, 0, stream>>>(output, input, cache, n, ws);
    check(cudaGetLastError(), "residual_diff_update");
  }
  launch_diff_finish<M>(ws, 1, items, static_cast<float>(n), partials, out, stream, "residual_diff_update");
}

}  // namespace

int64_t residual_diff_update_workspace(int64_t n) { return std::max<int64_t>(1, (n + kItem - 1) / kItem * kDiffSums); }

void residual_diff_update(DType dt, DType cache_dt, float* out, const void* output, const void* input, void* cache,
                          Metric metric, bool partials, int64_t n, float* workspace, void* stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_dtype(cache_dt, [&](auto ctag) {
      using C = decltype(ctag);
      dispatch_metric(metric, [&](auto m) {
        launch<decltype(m)::value>(out, static_cast<const T*>(output), static_cast<const T*>(input),
                                   static_cast<C*>(cache), partials, n, workspace, as_stream(stream));
      });
    });
  });
}

}  // namespace cuda
}  // namespace fastercache
