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
// cfg_recombine(_guided): computed, out in `dt`; low, high in `delta_dt`.
void cfg_recombine(DType dt, DType delta_dt, void* out, const void* computed, const void* low, const void* high,
                   const float* low_weight, const float* high_weight, int64_t n);
void cfg_recombine_guided(DType dt, DType delta_dt, void* out, const void* computed, const void* low,
                          const void* high, const float* low_weight, const float* high_weight,
                          const float* guidance_scale, int64_t n);
// out = a - b with a, b in `in_dt` and out in `out_dt` (the elementwise passes of cfg_residual_split).
void cfg_residual_split_diff(DType out_dt, DType in_dt, void* out, const void* a, const void* b, int64_t n);
// x (in `dt`, [samples, rows, channels] flattened) += g * (newer + w * (newer - older)), newer and older in
// `cache_dt`; g = gate[(i / sample_numel) * gate_stride + i % channels], fp32; gate may be null (g = 1).
void extrapolate_residual(DType dt, DType cache_dt, void* x, const void* newer, const void* older,
                          const float* gate, const float* weight, int64_t channels, int64_t sample_numel,
                          int64_t gate_stride, int64_t n);
// out = x + residuals[0] + ... + residuals[count - 1], fp32 accumulation in list order.
void residual_sum(DType dt, void* out, const void* x, const void* const* residuals, int count, int64_t n);

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
void cfg_recombine(DType dt, DType delta_dt, void* out, const void* computed, const void* low, const void* high,
                   const float* low_weight, const float* high_weight, int64_t n, void* stream);
void cfg_recombine_guided(DType dt, DType delta_dt, void* out, const void* computed, const void* low,
                          const void* high, const float* low_weight, const float* high_weight,
                          const float* guidance_scale, int64_t n, void* stream);
void cfg_residual_split_diff(DType out_dt, DType in_dt, void* out, const void* a, const void* b, int64_t n,
                             void* stream);
void extrapolate_residual(DType dt, DType cache_dt, void* x, const void* newer, const void* older,
                          const float* gate, const float* weight, int64_t channels, int64_t sample_numel,
                          int64_t gate_stride, int64_t n, void* stream);
// One launch sums up to kResidualSumCapacity residuals (their pointers travel in the kernel's parameter
// struct); more are summed in chunks through `workspace`, n fp32 elements (may be null when count fits).
constexpr int kResidualSumCapacity = 64;
void residual_sum(DType dt, void* out, const void* x, const void* const* residuals, int count, int64_t n,
                  float* workspace, void* stream);

}  // namespace cuda
}  // namespace fastercache
