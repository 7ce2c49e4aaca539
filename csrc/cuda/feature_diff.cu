#include "fastercache/launchers.h"
#include "reduce.cuh"

namespace fastercache {
namespace cuda {

namespace {

// Elements per block in the first stage: 16 128-bit loads per tensor per thread for fp32 (8 for fp16/bf16),
// and 1024 blocks for a 16M-element tensor, enough to fill any current GPU.
constexpr int64_t kItem = 16384;

int64_t items_per_row(int64_t cols) { return (cols + kItem - 1) / kItem; }

// Block i reduces elements [blk * kItem, blk * kItem + kItem) of row i / per_row into ws[i][0..kDiffSums).
template <Metric M, class T, bool kVec>
__global__ void __launch_bounds__(kThreads) diff_partials_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                                 int64_t cols, int64_t per_row,
                                                                 float* __restrict__ ws) {
  const int64_t item = blockIdx.x;
  const int64_t row = item / per_row, blk = item % per_row;
  const int64_t begin = row * cols + blk * kItem;
  const int64_t n = min(kItem, cols - blk * kItem);
  const T* pa = a + begin;
  const T* pb = b + begin;
  float s[kDiffSums] = {0.0f, 0.0f, 0.0f};
  int64_t done = 0;
  if (kVec) {
    constexpr int V = Pack<T>::kN;
    const int64_t nvec = n / V;
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < nvec; i += kThreads) {
      const Pack<T> x = reinterpret_cast<const Pack<T>*>(pa)[i];
      const Pack<T> y = reinterpret_cast<const Pack<T>*>(pb)[i];
#pragma unroll
      for (int j = 0; j < V; ++j) DiffTerm<M>::add(to_float(x.v[j]), to_float(y.v[j]), s[0], s[1], s[2]);
    }
    done = nvec * V;
  }
  for (int64_t i = done + threadIdx.x; i < n; i += kThreads)
    DiffTerm<M>::add(to_float(pa[i]), to_float(pb[i]), s[0], s[1], s[2]);
  block_sum<kDiffSums>(s);
  if (threadIdx.x == 0)
#pragma unroll
    for (int k = 0; k < kDiffSums; ++k) ws[item * kDiffSums + k] = s[k];
}

template <Metric M, class T>
void launch(float* out, const T* a, const T* b, bool partials, int64_t rows, int64_t cols, float* ws,
            cudaStream_t stream) {
  const int64_t per_row = items_per_row(cols);
  const int64_t items = rows * per_row;
  if (items > 0) {
    check_grid(items, "feature_diff");
    const bool vec = aligned16(a) && aligned16(b) && cols % Pack<T>::kN == 0;
    if (vec)
      diff_partials_kernel<M, T, true><<<static_cast<unsigned>(items), kThreads, 0, stream>>>(a, b, cols, per_row, ws);
    else
      diff_partials_kernel<M, T, false><<<static_cast<unsigned>(items), kThreads, 0, stream>>>(a, b, cols, per_row, ws);
    check(cudaGetLastError(), "feature_diff");
  }
  launch_diff_finish<M>(ws, rows, per_row, static_cast<float>(cols), partials, out, stream, "feature_diff");
}

}  // namespace

int64_t feature_diff_workspace(int64_t rows, int64_t cols) {
  return std::max<int64_t>(1, rows * items_per_row(cols) * kDiffSums);
}

void feature_diff(DType dt, float* out, const void* a, const void* b, Metric metric, bool partials, int64_t rows,
                  int64_t cols, float* workspace, void* stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_metric(metric, [&](auto m) {
      launch<decltype(m)::value>(out, static_cast<const T*>(a), static_cast<const T*>(b), partials, rows, cols,
                                 workspace, as_stream(stream));
    });
  });
}

}  // namespace cuda
}  // namespace fastercache
