// Every launcher of the two compiled modules. Pointers are raw (host pointers for fastercache::cpu, device
// pointers for fastercache::cuda); per-step scalars are read through fp32 pointers so a CUDA caller never has
// to synchronise to pass them. CUDA launchers take the stream as an opaque pointer and throw
// std::runtime_error (RuntimeError in Python) when the runtime reports an error.
#pragma once

#include <cstdint>

#include "fastercache/common.h"
#include "fastercache/reduce.h"

namespace fastercache {
namespace cpu {

void extrapolate(DType dt, void* out, const void* newer, const void* older, const float* weight, int64_t n);

// Reductions (fastercache/reduce.h): fp32 results in `out`, deterministic for any thread count.
// feature_diff: `rows` rows of `cols` elements; out[rows] metrics, or out[rows][3] raw sums when partials.
void feature_diff(DType dt, float* out, const void* a, const void* b, Metric metric, bool partials, int64_t rows,
                  int64_t cols);
// residual_diff_update: r = output - input; out = metric(r, cache) (or its 3 sums); cache = r (cache_dt).
void residual_diff_update(DType dt, DType cache_dt, float* out, const void* output, const void* input, void* cache,
                          Metric metric, bool partials, int64_t n);
// motion_score: residual viewed as [groups, frames, frame_size]; out[k] = m_k, or out[k][2] = (num, den).
void motion_score(DType dt, float* out, const void* residual, int64_t groups, int64_t frames, int64_t frame_size,
                  const int64_t* strides, int num_strides, bool partials);

}  // namespace cpu

namespace cuda {

void extrapolate(DType dt, void* out, const void* newer, const void* older, const float* weight, int64_t n,
                 void* stream);

// Reductions: as the cpu launchers, plus a device workspace of at least *_workspace(...) floats (per-block
// partials; no float atomics). `strides` is a host array.
int64_t feature_diff_workspace(int64_t rows, int64_t cols);
void feature_diff(DType dt, float* out, const void* a, const void* b, Metric metric, bool partials, int64_t rows,
                  int64_t cols, float* workspace, void* stream);
int64_t residual_diff_update_workspace(int64_t n);
void residual_diff_update(DType dt, DType cache_dt, float* out, const void* output, const void* input, void* cache,
                          Metric metric, bool partials, int64_t n, float* workspace, void* stream);
int64_t motion_score_workspace(int64_t groups, int64_t frames, int64_t frame_size, int num_strides);
void motion_score(DType dt, float* out, const void* residual, int64_t groups, int64_t frames, int64_t frame_size,
                  const int64_t* strides, int num_strides, bool partials, float* workspace, void* stream);

}  // namespace cuda
}  // namespace fastercache
