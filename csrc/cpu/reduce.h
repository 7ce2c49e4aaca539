// Deterministic blocked reductions for the CPU module. Work is cut into items whose bounds depend only on the
// sizes (never on the thread count); each item writes its partial sums, and the partials of each output row are
// combined by a pairwise tree in index order. So the result is bit-identical run to run and for any number of
// OpenMP threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel.h"

namespace fastercache {
namespace cpu {

// Elements per work item of the flat reductions: large enough that the per-item overhead vanishes, small enough
// that a 16M-element tensor still splits into 2048 items for the threads to share.
constexpr int64_t kReduceBlock = 8192;

// Independent accumulators per sum inside an item. The compiler vectorises across the lanes without
// reassociating anything (no -ffast-math needed), and 32 lanes give 4 AVX2 (8 SSE2) dependency chains per sum
// so the adds do not wait on each other's latency.
constexpr int kLanes = 32;

// acc[k][0..kLanes) -> acc[k][0] by a fixed pairwise tree.
template <int NS> inline void fold_lanes(float (&acc)[NS][kLanes], float* out) {
  for (int k = 0; k < NS; ++k) {
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int j = 0; j < w; ++j) acc[k][j] += acc[k][j + w];
    out[k] = acc[k][0];
  }
}

// Sums NS terms over i in [0, n): term(i, acc, lane) adds element i's contributions to acc[k][lane]. Element i
// always lands in lane i % kLanes, so the order of every addition is fixed by n alone.
template <int NS, class Term> inline void lane_sum(int64_t n, Term&& term, float* out) {
  float acc[NS][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) term(i + j, acc, j);
  for (int j = 0; i + j < n; ++j) term(i + j, acc, j);
  fold_lanes<NS>(acc, out);
}

// parts[0 .. count) (each `width` floats, consecutive) -> parts[0], summed by a pairwise tree in index order.
inline void pairwise_combine(float* parts, int64_t count, int width) {
  for (int64_t step = 1; step < count; step *= 2)
    for (int64_t i = 0; i + step < count; i += 2 * step)
      for (int k = 0; k < width; ++k) parts[i * width + k] += parts[(i + step) * width + k];
}

// Runs item(i, part) for every i in [0, rows * per_row) (part: `width` floats to fill) on up to `nthreads`
// threads, then calls finish(row, sums) with the pairwise combination of each row's per_row partials.
template <class Item, class Finish>
void blocked_reduce(int64_t rows, int64_t per_row, int width, int nthreads, Item&& item, Finish&& finish) {
  const int64_t items = rows * per_row;
  std::vector<float> parts(static_cast<size_t>(std::max<int64_t>(items, rows)) * width, 0.0f);
  parallel_chunks(items, std::max(1, nthreads), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) item(i, parts.data() + i * width);
  });
  if (per_row == 0) {  // empty rows: all sums are zero
    for (int64_t r = 0; r < rows; ++r) finish(r, parts.data() + r * width);
    return;
  }
  auto combine = [&](int64_t r) {
    float* p = parts.data() + r * per_row * width;
    pairwise_combine(p, per_row, width);
    finish(r, p);
  };
  if (rows == 1 || items < 2 * kReduceBlock) {
    for (int64_t r = 0; r < rows; ++r) combine(r);
  } else {
    parallel_chunks(rows, std::max(1, nthreads), [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r) combine(r);
    });
  }
}

}  // namespace cpu
}  // namespace fastercache
