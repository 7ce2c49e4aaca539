#include "common.cuh"
#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"

namespace fastercache {
namespace cuda {

// One map over the K history slots (and x): the weights are read on the device (__ldg of each pointer), so a
// caller never synchronises to pass them and a captured CUDA graph picks up new values on replay.
void forecast(DType dt, void* out, PtrArray history, const float* weights, const void* x, int64_t n,
              void* stream) {
  dispatch_forecast(history.count, x != nullptr, [&](auto k, auto has_x) {
    using F = ForecastF<decltype(k)::value, decltype(has_x)::value>;
    const void* in[F::kIn];
    const float* s[F::kScalars];
    for (int i = 0; i < F::kScalars; ++i) {
      in[i] = history.data[i];
      s[i] = weights + i;
    }
    if constexpr (decltype(has_x)::value) in[F::kIn - 1] = x;
    launch_map_dtype<F>(dt, out, in, s, n, stream, "forecast");
  });
}

}  // namespace cuda
}  // namespace fastercache
