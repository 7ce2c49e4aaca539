// Every launcher of the two compiled modules, declared once in FASTERCACHE_LAUNCHERS: the header declares each
// row in fastercache::cpu and fastercache::cuda, and bind_cpu.cpp / bind_cuda.cpp bind every row (Python
// argument names come from the parameter names written here). Pointers are raw (host pointers for
// fastercache::cpu, device pointers for fastercache::cuda); per-step scalars are read through fp32 pointers so
// a CUDA caller never has to synchronise to pass them. CUDA launchers take the row's CUDA-only parameters, then
// the stream as an opaque pointer, and throw std::runtime_error (RuntimeError in Python) when the runtime
// reports an error.
#pragma once

#include <cstdint>

#include "fastercache/common.h"
#include "fastercache/reduce.h"

namespace fastercache {

// A list of raw pointers (Python passes a list of ints).
struct PtrArray {
  const void* const* data;
  int count;
};

// X(name, parameters, CUDA-only parameters after the shared ones: empty, or starting with a comma)
// Reductions (fastercache/reduce.h): fp32 results in `out`, deterministic for any thread count; on CUDA a device
// workspace of at least <name>_workspace(...) floats (per-block partials; no float atomics).
#define FASTERCACHE_LAUNCHERS(X)                                                                                  \
  /* `rows` rows of `cols` elements; out[rows] metrics, or out[rows][3] raw sums when partials */               \
  X(feature_diff,                                                                                                 \
    (DType dtype, float* out, const void* a, const void* b, Metric metric, bool partials, int64_t rows,         \
     int64_t cols),                                                                                               \
    (, float* workspace))                                                                                         \
  /* r = output - input; out = metric(r, cache) (or its 3 sums); cache = r (cache_dtype) */                     \
  X(residual_diff_update,                                                                                         \
    (DType dtype, DType cache_dtype, float* out, const void* output, const void* input, void* cache,            \
     Metric metric, bool partials, int64_t n),                                                                    \
    (, float* workspace))                                                                                         \
  /* residual viewed as [groups, frames, frame_size]; out[k] = m_k, or out[k][2] = (num, den); strides: host */ \
  X(motion_score,                                                                                                 \
    (DType dtype, float* out, const void* residual, int64_t groups, int64_t frames, int64_t frame_size,         \
     const int64_t* strides, int num_strides, bool partials),                                                     \
    (, float* workspace))                                                                                         \
  /* computed, out in `dtype`; low, high in `delta_dtype` */                                                     \
  X(cfg_recombine,                                                                                                \
    (DType dtype, DType delta_dtype, void* out, const void* computed, const void* low, const void* high,        \
     const float* low_weight, const float* high_weight, int64_t n),                                               \
    ())                                                                                                           \
  X(cfg_recombine_guided,                                                                                         \
    (DType dtype, DType delta_dtype, void* out, const void* computed, const void* low, const void* high,        \
     const float* low_weight, const float* high_weight, const float* guidance_scale, int64_t n),                 \
    ())                                                                                                           \
  /* out = a - b with a, b in `in_dtype` and out in `out_dtype` (the elementwise passes of cfg_residual_split) */ \
  X(cfg_residual_split_diff, (DType out_dtype, DType in_dtype, void* out, const void* a, const void* b, int64_t n), \
    ())                                                                                                           \
  /* out = x + residuals[0] + ... + residuals[count - 1], fp32 accumulation in list order; on CUDA beyond        \
     kResidualSumCapacity residuals an fp32 workspace of n elements (may be null when the count fits) */         \
  X(residual_sum, (DType dtype, void* out, const void* x, PtrArray residuals, int64_t n), (, float* workspace)) \
  /* out = x + weights[0] * history[0] + ... (x may be null: 0), fp32 in slot order, weight-0 slots left out;     \
     history: 1 to kForecastMaxSlots slot pointers; weights: that many fp32 values (device memory on CUDA) */     \
  X(forecast, (DType dtype, void* out, PtrArray history, const float* weights, const void* x, int64_t n), ())

// Host-side queries of the CUDA module (no driver needed): the workspace sizes of the reductions.
#define FASTERCACHE_CUDA_QUERIES(X)                                            \
  X(feature_diff_workspace, (int64_t rows, int64_t cols))                      \
  X(residual_diff_update_workspace, (int64_t n))                               \
  X(motion_score_workspace, (int64_t groups, int64_t frames, int64_t frame_size, int num_strides))

#define FASTERCACHE_UNPAREN(...) __VA_ARGS__

namespace cpu {
#define FASTERCACHE_DECLARE_CPU(name, params, cuda_params) void name params;
FASTERCACHE_LAUNCHERS(FASTERCACHE_DECLARE_CPU)
#undef FASTERCACHE_DECLARE_CPU
}  // namespace cpu

namespace cuda {
#define FASTERCACHE_DECLARE_CUDA(name, params, cuda_params) \
  void name(FASTERCACHE_UNPAREN params FASTERCACHE_UNPAREN cuda_params, void* stream);
FASTERCACHE_LAUNCHERS(FASTERCACHE_DECLARE_CUDA)
#undef FASTERCACHE_DECLARE_CUDA
#define FASTERCACHE_DECLARE_QUERY(name, params) int64_t name params;
FASTERCACHE_CUDA_QUERIES(FASTERCACHE_DECLARE_QUERY)
#undef FASTERCACHE_DECLARE_QUERY
// One launch sums up to kResidualSumCapacity residuals (their pointers travel in the kernel's parameter struct).
constexpr int kResidualSumCapacity = 64;
}  // namespace cuda
}  // namespace fastercache
