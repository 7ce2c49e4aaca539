#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <memory>

#include "fastercache/launchers.h"
#include "parallel.h"

namespace fastercache {
namespace cpu {

namespace {

// Each residual is read in runs of 64 KiB (the accumulator block, in fp32, stays in L2 meanwhile): long enough
// for the hardware prefetchers to pay off. Measured on the 2-core EPYC dev machine, 56 residuals of 9.4M
// elements, one thread: bf16 runs of 4 KiB 104 ms, 32 KiB 44 ms, 64 KiB 38.7 ms, 128 KiB 37 ms; fp32 runs of
// 16 KiB 78 ms, 64 KiB 64 ms, 128 KiB 65-70 ms.
constexpr int64_t kRunBytes = 64 << 10;

// acc[j] = (((acc[j] + r0[j]) + r1[j]) + r2[j]) + r3[j]: four residuals per pass over the accumulator, in list
// order (one per pass: 229 ms instead of 104 ms with 4 KiB runs).
template <class T>
inline void add4(float* __restrict__ acc, const T* r0, const T* r1, const T* r2, const T* r3, int64_t m) {
  for (int64_t j = 0; j < m; ++j) {
    float v = acc[j];
    v += to_float(r0[j]);
    v += to_float(r1[j]);
    v += to_float(r2[j]);
    v += to_float(r3[j]);
    acc[j] = v;
  }
}

#if defined(__AVX2__) && defined(__F16C__)
// The x86-64-v3 build spells the loop out in AVX2 with parallel.h's load8 (halves through F16C: the branch-free
// integer conversion of common.h does not vectorise to it). Measured on the 2-core EPYC dev machine, 56
// residuals of 9.4M elements, one thread: fp16 759 -> 88 ms; bf16 about 2x faster than the auto-vectorised loop
// in the module build. Same adds in the same order, so the same bits.

// One cache line of each residual per step, with a software prefetch 2 KiB ahead in each: four interleaved
// streams restart the hardware prefetchers at every run. Measured on the 2-core EPYC dev machine, 56 bf16
// residuals of 9.4M elements, two threads: 23.9 ms without the prefetch, 15.7 ms with it (67 GB/s, what a plain
// two-thread read of one array reaches there); one thread: 31.8 and 30.5 ms.
template <class T>
inline void add4_fast(float* __restrict__ acc, const T* r0, const T* r1, const T* r2, const T* r3, int64_t m) {
  constexpr int64_t kLine = 64 / sizeof(T);
  // the address 2 KiB ahead, formed as an integer: it may lie past the end of the array (a prefetch never faults)
  auto ahead = [](const T* p) { return reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + 2048); };
  int64_t j = 0;
  for (; j + kLine <= m; j += kLine) {
    _mm_prefetch(ahead(r0 + j), _MM_HINT_T0);
    _mm_prefetch(ahead(r1 + j), _MM_HINT_T0);
    _mm_prefetch(ahead(r2 + j), _MM_HINT_T0);
    _mm_prefetch(ahead(r3 + j), _MM_HINT_T0);
    for (int64_t h = j; h < j + kLine; h += 8) {
      __m256 v = _mm256_loadu_ps(acc + h);
      v = _mm256_add_ps(v, load8(r0 + h));
      v = _mm256_add_ps(v, load8(r1 + h));
      v = _mm256_add_ps(v, load8(r2 + h));
      v = _mm256_add_ps(v, load8(r3 + h));
      _mm256_storeu_ps(acc + h, v);
    }
  }
  add4(acc + j, r0 + j, r1 + j, r2 + j, r3 + j, m - j);
}
#else
template <class T>
inline void add4_fast(float* __restrict__ acc, const T* r0, const T* r1, const T* r2, const T* r3, int64_t m) {
  add4(acc, r0, r1, r2, r3, m);
}
#endif

// out = x + r[0] + r[1] + ... in fp32, summed in list order (as sequential eager adds in fp32 would), rounded
// once. Each thread walks its chunk in accumulator blocks; the last count % 4 residuals are added one by one.
template <class T> void residual_sum_t(T* out, const T* x, const T* const* r, int count, int64_t n) {
  constexpr int64_t kAcc = kRunBytes / sizeof(T);
  map_driver<T, kRunBytes>(out, n, [&](T* dst, int64_t lo, int64_t hi) {
    std::unique_ptr<float[]> buffer(new float[kAcc + 16]);  // up to 128 KiB: off the (OpenMP thread's) stack
    float* acc = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buffer.get()) + 63) & ~uintptr_t{63});
    for (int64_t b = lo; b < hi; b += kAcc) {
      const int64_t m = std::min<int64_t>(kAcc, hi - b);
      load_run(acc, x + b, m);  // parallel.h: vector conversions in the x86-64-v3 build
      int k = 0;
      for (; k + 4 <= count; k += 4) add4_fast(acc, r[k] + b, r[k + 1] + b, r[k + 2] + b, r[k + 3] + b, m);
      for (; k < count; ++k) {
        const T* rk = r[k] + b;
        for (int64_t j = 0; j < m; ++j) acc[j] += to_float(rk[j]);
      }
      store_run(dst + (b - lo), acc, m);
    }
  });
}

}  // namespace

void residual_sum(DType dt, void* out, const void* x, PtrArray residuals, int64_t n) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    residual_sum_t<T>(static_cast<T*>(out), static_cast<const T*>(x),
                      reinterpret_cast<const T* const*>(residuals.data), residuals.count, n);
  });
}

}  // namespace cpu
}  // namespace fastercache
