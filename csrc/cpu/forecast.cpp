#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"
#include "parallel.h"

namespace fastercache {
namespace cpu {

// One map over the K history slots (and x): the same loops as every elementwise op (parallel.h), so the
// x86-64-v3 build runs ForecastF on eight-lane vectors.
void forecast(DType dt, void* out, PtrArray history, const float* weights, const void* x, int64_t n) {
  dispatch_forecast(history.count, x != nullptr, [&](auto k, auto has_x) {
    using F = ForecastF<decltype(k)::value, decltype(has_x)::value>;
    const void* in[F::kIn];
    const float* s[F::kScalars];
    for (int i = 0; i < F::kScalars; ++i) {
      in[i] = history.data[i];
      s[i] = weights + i;
    }
    if constexpr (decltype(has_x)::value) in[F::kIn - 1] = x;
    map_dtype<F>(dt, out, in, s, n);
  });
}

}  // namespace cpu
}  // namespace fastercache
