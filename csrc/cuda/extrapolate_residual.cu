#include "common.cuh"
#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"

namespace fastercache {
namespace cuda {

void extrapolate_residual(DType dt, DType cache_dt, void* x, const void* newer, const void* older,
                          const float* gate, const float* weight, int64_t channels, int64_t sample_numel,
                          int64_t gate_stride, int64_t n, void* stream) {
  const float* s[] = {weight};
  const void* in[] = {x, newer, older};  // x is read as the first input and written as the output
  dispatch_mixed<ExtrapolateResidualF>(dt, cache_dt, in, [&](auto tag, auto tag_c, auto a, auto b) {
    using T = decltype(tag);
    launch_map_channels<ExtrapolateResidualF, T, T, decltype(tag_c)>(static_cast<T*>(x), a, b, gate, channels,
                                                                     sample_numel, gate_stride, s, n,
                                                                     as_stream(stream), "extrapolate_residual");
  });
}

}  // namespace cuda
}  // namespace fastercache
