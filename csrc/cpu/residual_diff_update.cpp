#include <type_traits>

#include "fastercache/launchers.h"
#include "fastercache/reduce.h"
#include "reduce.h"

namespace fastercache {
namespace cpu {

namespace {

// r = output - input (fp32); sums the metric terms of (r, cache) and stores r into cache. The cache line just
// read is written straight back, so normal stores cost no extra traffic. __restrict__ (Python never passes
// overlapping buffers) lets the compiler vectorise without alias checks.
template <Metric M, class T, class C>
void update_block(const T* __restrict__ po, const T* __restrict__ pi, C* __restrict__ pc, int64_t len,
                  float* part) {
  if constexpr ((std::is_same_v<T, f16> || std::is_same_v<C, f16>) && kVecRuns) {
    // fp16 in the x86-64-v3 build: GCC leaves the half conversions in the loop below scalar, so runs go through
    // parallel.h's F16C conversions into L1 arrays and the fp32 loop. Element k still lands in lane k % kLanes in
    // increasing k, as in lane_sum: the same bits (checked against the old build and the baseline module).
    // Measured A/B, one thread, [2, 2310, 128]: fp16 with an fp16 cache 544 -> 136 us, with an fp32 cache
    // 229 -> 150-164 us; bf16 is left on lane_sum, which was as fast (166 vs 173 us) or faster (fp32 cache 72 vs 152).
    constexpr int64_t kPiece = 8 * kLanes;
    alignas(32) float o[kPiece], in[kPiece], c[kPiece];
    float acc[kDiffSums][kLanes] = {};
    for (int64_t p = 0; p < len; p += kPiece) {
      const int64_t m = std::min(kPiece, len - p);
      load_run(o, po + p, m);
      load_run(in, pi + p, m);
      load_run(c, pc + p, m);
      int64_t k = 0;
      for (; k + kLanes <= m; k += kLanes)
        for (int j = 0; j < kLanes; ++j) {
          o[k + j] -= in[k + j];
          DiffTerm<M>::add(o[k + j], c[k + j], acc[0][j], acc[1][j], acc[2][j]);
        }
      for (int j = 0; k + j < m; ++j) {
        o[k + j] -= in[k + j];
        DiffTerm<M>::add(o[k + j], c[k + j], acc[0][j], acc[1][j], acc[2][j]);
      }
      store_run(pc + p, o, m);
    }
    fold_lanes<kDiffSums>(acc, part);
    return;
  }
  lane_sum<kDiffSums>(len, [&](int64_t k, float (&acc)[kDiffSums][kLanes], int j) {
    const float r = to_float(po[k]) - to_float(pi[k]);
    DiffTerm<M>::add(r, to_float(pc[k]), acc[0][j], acc[1][j], acc[2][j]);
    pc[k] = from_float<C>(r);
  }, part);
}

template <Metric M, class T, class C>
void update(float* out, const T* output, const T* input, C* cache, bool partials, int64_t n) {
  const int64_t items = (n + kReduceBlock - 1) / kReduceBlock;
  auto item = [&](int64_t i, float* part) {
    const int64_t begin = i * kReduceBlock;
    update_block<M>(output + begin, input + begin, cache + begin, std::min(kReduceBlock, n - begin), part);
  };
  blocked_reduce(1, items, kDiffSums, threads_for(n), item,
                 [&](int64_t, const float* s) { store_diff(M, partials, s, static_cast<float>(n), out); });
}

}  // namespace

void residual_diff_update(DType dt, DType cache_dt, float* out, const void* output, const void* input, void* cache,
                          Metric metric, bool partials, int64_t n) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_dtype(cache_dt, [&](auto ctag) {
      using C = decltype(ctag);
      dispatch_metric(metric, [&](auto m) {
        update<decltype(m)::value>(out, static_cast<const T*>(output), static_cast<const T*>(input),
                                   static_cast<C*>(cache), partials, n);
      });
    });
  });
}

}  // namespace cpu
}  // namespace fastercache
