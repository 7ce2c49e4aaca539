#include "fastercache/launchers.h"
#include "fastercache/reduce.h"
#include "reduce.h"

namespace fastercache {
namespace cpu {

namespace {

template <Metric M, class T>
void diff_rows(float* out, const T* a, const T* b, bool partials, int64_t rows, int64_t cols) {
  const int64_t per_row = (cols + kReduceBlock - 1) / kReduceBlock;
  auto item = [&](int64_t i, float* part) {
    const int64_t row = i / per_row, blk = i % per_row;
    const int64_t begin = row * cols + blk * kReduceBlock;
    const int64_t n = std::min(kReduceBlock, cols - blk * kReduceBlock);
    const T* pa = a + begin;
    const T* pb = b + begin;
    lane_sum<kDiffSums>(n, [&](int64_t k, float (&acc)[kDiffSums][kLanes], int j) {
      DiffTerm<M>::add(to_float(pa[k]), to_float(pb[k]), acc[0][j], acc[1][j], acc[2][j]);
    }, part);
  };
  const float count = static_cast<float>(cols);
  const int64_t width = partials ? kDiffSums : 1;
  blocked_reduce(rows, per_row, kDiffSums, threads_for(rows * cols), item,
                 [&](int64_t r, const float* s) { store_diff(M, partials, s, count, out + r * width); });
}

}  // namespace

void feature_diff(DType dt, float* out, const void* a, const void* b, Metric metric, bool partials, int64_t rows,
                  int64_t cols) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_metric(metric, [&](auto m) {
      diff_rows<decltype(m)::value>(out, static_cast<const T*>(a), static_cast<const T*>(b), partials, rows, cols);
    });
  });
}

}  // namespace cpu
}  // namespace fastercache
