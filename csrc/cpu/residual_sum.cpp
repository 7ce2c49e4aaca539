#include <algorithm>

#include "fastercache/launchers.h"
#include "parallel.h"

namespace fastercache {
namespace cpu {

namespace {

// out = x + r[0] + r[1] + ... in fp32, summed in list order (as sequential eager adds in fp32 would).
// Each thread walks its chunk in blocks whose fp32 accumulator stays in L1; the residuals are added four at a
// time so the accumulator is loaded and stored once per four inputs.
template <class T> void residual_sum_t(T* out, const T* x, const T* const* r, int count, int64_t n) {
  map_driver<T, 8192>(out, n, [&](T* dst, int64_t lo, int64_t hi) {
    constexpr int64_t kAcc = 2048;
    alignas(64) float acc[kAcc];
    for (int64_t b = lo; b < hi; b += kAcc) {
      const int64_t m = std::min<int64_t>(kAcc, hi - b);
      const T* xb = x + b;
      for (int64_t j = 0; j < m; ++j) acc[j] = to_float(xb[j]);
      int k = 0;
      for (; k + 4 <= count; k += 4) {
        const T* r0 = r[k] + b;
        const T* r1 = r[k + 1] + b;
        const T* r2 = r[k + 2] + b;
        const T* r3 = r[k + 3] + b;
        for (int64_t j = 0; j < m; ++j) {
          float v = acc[j];
          v += to_float(r0[j]);
          v += to_float(r1[j]);
          v += to_float(r2[j]);
          v += to_float(r3[j]);
          acc[j] = v;
        }
      }
      for (; k < count; ++k) {
        const T* rk = r[k] + b;
        for (int64_t j = 0; j < m; ++j) acc[j] += to_float(rk[j]);
      }
      T* d = dst + (b - lo);
      for (int64_t j = 0; j < m; ++j) d[j] = from_float<T>(acc[j]);
    }
  });
}

}  // namespace

void residual_sum(DType dt, void* out, const void* x, const void* const* residuals, int count, int64_t n) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    residual_sum_t<T>(static_cast<T*>(out), static_cast<const T*>(x),
                      reinterpret_cast<const T* const*>(residuals), count, n);
  });
}

}  // namespace cpu
}  // namespace fastercache
