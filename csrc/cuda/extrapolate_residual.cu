#include "common.cuh"
#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"

namespace fastercache {
namespace cuda {

void extrapolate_residual(DType dt, DType cache_dt, void* x, const void* newer, const void* older,
                          const float* gate, const float* weight, int64_t channels, int64_t sample_numel,
                          int64_t gate_stride, int64_t n, void* stream) {
  const float* s[] = {weight};
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_dtype(cache_dt, [&](auto tag_c) {
      using U = decltype(tag_c);
      T* xt = static_cast<T*>(x);
      const T* a[] = {xt};
      const U* b[] = {static_cast<const U*>(newer), static_cast<const U*>(older)};
      launch_map_channels<ExtrapolateResidualF, T, T, U>(xt, a, b, gate, channels, sample_numel, gate_stride, s,
                                                         n, as_stream(stream), "extrapolate_residual");
    });
  });
}

}  // namespace cuda
}  // namespace fastercache
