// OpenMP helpers for the CPU module: one contiguous chunk per thread, so each thread streams through its own
// part of memory and the inner loops stay simple enough for the compiler to vectorise.
#pragma once

#include <omp.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__F16C__) && defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "fastercache/common.h"
#include "fastercache/elementwise.h"

namespace fastercache {
namespace cpu {

// Below this many elements per thread the fork/join costs more than it saves.
constexpr int64_t kMinPerThread = 1 << 15;

inline int threads_for(int64_t n, int64_t min_per_thread = kMinPerThread) {
  const int64_t want = std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread));
  return static_cast<int>(std::min<int64_t>(want, omp_get_max_threads()));
}

// fn(begin, end, thread) over [0, n) split into one chunk per thread; chunk starts are multiples of 64
// elements so every chunk but the last starts cache-line aligned when the base is.
template <class Fn> void parallel_chunks(int64_t n, int nthreads, Fn&& fn) {
  if (n <= 0) return;
  if (nthreads <= 1) {
    fn(int64_t{0}, n, 0);
    return;
  }
  const int64_t chunk = ((n + nthreads - 1) / nthreads + 63) / 64 * 64;
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    const int64_t b = std::min<int64_t>(n, t * chunk);
    const int64_t e = std::min<int64_t>(n, b + chunk);
    if (b < e) fn(b, e, t);
  }
}

// Outputs at least this large bypass the cache with streaming stores: they will not be read back before
// they are evicted anyway, and a normal store first reads the line (read-for-ownership). Measured on the
// 2-core EPYC dev machine (32 MB L3), a two-input fp32 map (newer + w * (newer - older), the extrapolate op since
// replaced by forecast) at 16M elements with out=: 3.1 ms (61 GB/s) with normal stores, 1.8 ms (107 GB/s, the
// speed of torch's copy_) with streaming stores.
constexpr int64_t kStreamBytes = 8 << 20;

// Stores `bytes` (a multiple of 16) from an L1-resident buffer to 16-byte aligned `dst`, bypassing the cache.
inline void stream_copy(void* dst, const void* src, int64_t bytes) {
#if defined(__SSE2__)
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (int64_t i = 0; i < bytes / 16; ++i) _mm_stream_si128(d + i, _mm_load_si128(s + i));
#else
  std::memcpy(dst, src, static_cast<size_t>(bytes));
#endif
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Runs compute(dst, b, e), which writes out[b, e) to dst[0, e - b), over [0, n) with one chunk per thread.
// Outputs of kStreamBytes or more are computed in kBlockBytes blocks into a stack buffer and streamed out.
template <class TO, int64_t kBlockBytes = 1024, class Compute>
void map_driver(TO* out, int64_t n, Compute&& compute) {
  const bool stream = n * static_cast<int64_t>(sizeof(TO)) >= kStreamBytes;
  parallel_chunks(n, threads_for(n), [&](int64_t b, int64_t e, int) {
    if (!stream) {
      compute(out + b, b, e);
      return;
    }
    // Elements up to the first 16-byte boundary, then blocks computed into a stack buffer and streamed out,
    // then the tail.
    constexpr int64_t kBlock = kBlockBytes / sizeof(TO);
    alignas(64) TO buf[kBlock];
    const uintptr_t addr = reinterpret_cast<uintptr_t>(out + b);
    const int64_t head = std::min<int64_t>(e - b, static_cast<int64_t>((16 - addr % 16) % 16 / sizeof(TO)));
    compute(out + b, b, b + head);
    int64_t i = b + head;
    if ((reinterpret_cast<uintptr_t>(out + i) & 15) == 0) {
      for (; i + kBlock <= e; i += kBlock) {
        compute(buf, i, i + kBlock);
        stream_copy(out + i, buf, sizeof buf);
      }
      stream_fence();
    }
    compute(out + i, i, e);
  });
}

// ---- the inner loop of every map -------------------------------------------------------------------------------
// GCC vectorises the branch-free fp16/bf16 conversions of common.h poorly inside fused loops (halves not at
// all), so the x86-64-v3 build spells them out: halves through F16C, bfloat16 through AVX2 integer ops, both
// rounding to nearest even exactly like from_float (same bits, NaN payloads aside). Functors whose apply is a
// template (most in elementwise.h) then run on eight-lane vectors straight from the conversions; others go
// through fp32 arrays in L1. Measured on the 2-core EPYC dev machine (Zen 5), one thread, the inner loop of
// cfg_recombine_guided over 1.1M fp16 elements: 1.25 ms with the scalar conversions, 0.18 ms through L1 arrays,
// 0.10 ms on vectors (bf16: 0.16 ms); eager torch, which uses AVX-512 here, takes 0.40 ms for the formula.

template <class T> inline void load_run(float* dst, const T* src, int64_t m) {
  for (int64_t j = 0; j < m; ++j) dst[j] = to_float(src[j]);
}
template <class T> inline void store_run(T* dst, const float* src, int64_t m) {
  for (int64_t j = 0; j < m; ++j) dst[j] = from_float<T>(src[j]);
}

#if defined(__F16C__) && defined(__AVX2__)
constexpr bool kVecRuns = true;
typedef float v8f __attribute__((vector_size(32)));  // a GCC vector: arithmetic operators, the layout of __m256

inline v8f load8(const float* p) { return _mm256_loadu_ps(p); }
inline v8f load8(const f16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline v8f load8(const bf16* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// float_to_bf16 of common.h on eight lanes: round to nearest even, NaN stays a quiet NaN; each lane <= 0xffff.
inline __m256i bf16_bits(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i bias = _mm256_add_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7fff));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

inline void store8(float* p, v8f v) { _mm256_storeu_ps(p, v); }
inline void store8(f16* p, v8f v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void store8(bf16* p, v8f v) {
  // pack to 16 bits (per 128-bit half), then bring the two halves' low quadwords together
  const __m256i packed = _mm256_packus_epi32(bf16_bits(v), _mm256_setzero_si256());
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
}

// Sixteen lanes as two vectors. With a bfloat16 operand (kMixed) the lanes are kept in the order
// [0-3, 8-11], [4-7, 12-15]: a 256-bit bf16 load unpacks to it in two shuffles and packs back from it in one
// (instead of four and two in natural order); fp32 and fp16 operands are shuffled into it with two.
// Measured on the 2-core EPYC dev machine, one thread, cfg_recombine_guided bf16 over 1.1M elements:
// 0.21 ms in natural order, 0.16 ms in this one.
struct V16 {
  v8f lo, hi;
};
inline V16 to_mixed(v8f a, v8f b) {
  return {_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31)};
}
template <bool kMixed, class T> inline V16 load16(const T* p) {
  const v8f a = load8(p), b = load8(p + 8);
  return kMixed ? to_mixed(a, b) : V16{a, b};
}
template <bool kMixed, class T> inline void store16(T* p, V16 v) {
  if constexpr (kMixed) v = to_mixed(v.lo, v.hi);  // the same shuffle puts the order back
  store8(p, v.lo);
  store8(p + 8, v.hi);
}
template <> inline V16 load16<true, bf16>(const bf16* p) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i zero = _mm256_setzero_si256();
  return {_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, w)), _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, w))};
}
template <> inline void store16<true, bf16>(bf16* p, V16 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_packus_epi32(bf16_bits(v.lo), bf16_bits(v.hi)));
}

template <class T> inline void load_run_vec(float* dst, const T* src, int64_t m) {
  int64_t j = 0;
  for (; j + 8 <= m; j += 8) store8(dst + j, load8(src + j));
  for (; j < m; ++j) dst[j] = to_float(src[j]);
}
template <class T> inline void store_run_vec(T* dst, const float* src, int64_t m) {
  int64_t j = 0;
  for (; j + 8 <= m; j += 8) store8(dst + j, load8(src + j));
  for (; j < m; ++j) dst[j] = from_float<T>(src[j]);
}
template <> inline void load_run<f16>(float* dst, const f16* src, int64_t m) { load_run_vec(dst, src, m); }
template <> inline void load_run<bf16>(float* dst, const bf16* src, int64_t m) { load_run_vec(dst, src, m); }
template <> inline void store_run<f16>(f16* dst, const float* src, int64_t m) { store_run_vec(dst, src, m); }
template <> inline void store_run<bf16>(bf16* dst, const float* src, int64_t m) { store_run_vec(dst, src, m); }

// Whether F::apply accepts eight-lane vectors (a template apply).
template <class F, class = void> struct vector_apply : std::false_type {};
template <class F>
struct vector_apply<F, std::void_t<decltype(F::apply(std::declval<const v8f*>(), std::declval<const float*>()))>>
    : std::true_type {};
#else
constexpr bool kVecRuns = false;
template <class F> struct vector_apply : std::false_type {};
#endif

// dst[j] = F::apply({a[k][i + j]..., b[k][i + j]...}, s) for j in [0, m).
template <class F, class TO, class TA, class TB>
inline void apply_run(TO* dst, const TA* const* a_in, const TB* const* b_in, const float* s_in, int64_t i,
                      int64_t m) {
  constexpr int kB = second_inputs<F>::value;
  constexpr int kA = F::kIn - kB;
  // Local copies: the compiler cannot prove the stores to dst leave the caller's arrays alone, and would reload
  // every pointer and scalar (and recompute the functor's scalar terms) on every step.
  const TA* a[kA > 0 ? kA : 1];
  const TB* b[kB > 0 ? kB : 1];
  float s[F::kScalars > 0 ? F::kScalars : 1];
  for (int k = 0; k < kA; ++k) a[k] = a_in[k] + i;
  for (int k = 0; k < kB; ++k) b[k] = b_in[k] + i;
  for (int k = 0; k < F::kScalars; ++k) s[k] = s_in[k];
  auto scalar = [&](int64_t j) {
    float x[F::kIn];
    for (int k = 0; k < kA; ++k) x[k] = to_float(a[k][j]);
    for (int k = 0; k < kB; ++k) x[kA + k] = to_float(b[k][j]);
    dst[j] = from_float<TO>(F::apply(x, s));
  };
  auto is16 = [](auto t) { return std::is_same_v<decltype(t), f16> || std::is_same_v<decltype(t), bf16>; };
  constexpr bool kHalf = is16(TO{}) || (kA > 0 && is16(TA{})) || (kB > 0 && is16(TB{}));
#if defined(__F16C__) && defined(__AVX2__)
  if constexpr (vector_apply<F>::value) {
    auto isb = [](auto t) { return std::is_same_v<decltype(t), bf16>; };
    constexpr bool kMixed = isb(TO{}) || (kA > 0 && isb(TA{})) || (kB > 0 && isb(TB{}));
    int64_t j = 0;
    for (; j + 16 <= m; j += 16) {
      V16 in[F::kIn];
      for (int k = 0; k < kA; ++k) in[k] = load16<kMixed>(a[k] + j);
      for (int k = 0; k < kB; ++k) in[kA + k] = load16<kMixed>(b[k] + j);
      v8f lo[F::kIn], hi[F::kIn];
      for (int k = 0; k < F::kIn; ++k) {
        lo[k] = in[k].lo;
        hi[k] = in[k].hi;
      }
      store16<kMixed>(dst + j, V16{F::apply(lo, s), F::apply(hi, s)});
    }
    for (; j < m; ++j) scalar(j);
    return;
  }
#endif
  if constexpr (kHalf && kVecRuns) {
    // fp32 arrays in L1, filled and drained by the vector conversions; the plain loop between them vectorises
    constexpr int64_t kPiece = 128;
    alignas(32) float in[F::kIn][kPiece];
    alignas(32) float y[kPiece];
    for (int64_t p = 0; p < m; p += kPiece) {
      const int64_t pm = std::min<int64_t>(kPiece, m - p);
      for (int k = 0; k < kA; ++k) load_run(in[k], a[k] + p, pm);
      for (int k = 0; k < kB; ++k) load_run(in[kA + k], b[k] + p, pm);
      for (int64_t j = 0; j < pm; ++j) {
        float x[F::kIn];
        for (int k = 0; k < F::kIn; ++k) x[k] = in[k][j];
        y[j] = F::apply(x, s);
      }
      store_run(dst + p, y, pm);
    }
  } else {
    for (int64_t j = 0; j < m; ++j) scalar(j);
  }
}

// A map's operands as its loops take them: the scalars read once, the input pointers in local arrays.
template <class F, class TA, class TB> struct MapArgs {
  static constexpr int kB = second_inputs<F>::value;
  static constexpr int kA = F::kIn - kB;
  float s[F::kScalars > 0 ? F::kScalars : 1];
  const TA* a[kA > 0 ? kA : 1];
  const TB* b[kB > 0 ? kB : 1];
  MapArgs(const TA* const* a_in, const TB* const* b_in, const float* const* scalars) {
    for (int k = 0; k < F::kScalars; ++k) s[k] = *scalars[k];
    for (int k = 0; k < kA; ++k) a[k] = a_in[k];
    for (int k = 0; k < kB; ++k) b[k] = b_in[k];
  }
};

// out[i] = F::apply({a[k][i]..., b[k][i]...}, s) for the functors of fastercache/elementwise.h: the first
// kIn - kInB inputs are read as TA, the last kInB (second_inputs<F>) as TB, the result is stored as TO.
template <class F, class TO, class TA, class TB>
void map_mixed(TO* out, const TA* const* a, const TB* const* b, const float* const* scalars, int64_t n) {
  const MapArgs<F, TA, TB> m(a, b, scalars);
  map_driver(out, n, [&](TO* dst, int64_t lo, int64_t hi) {
    apply_run<F>(dst, m.a, m.b, m.s, lo, hi - lo);
  });
}

// out[i] = F::apply({in[k][i]}, s): every input and the output in one storage type.
template <class F, class T>
void map(T* out, const T* const* in, const float* const* scalars, int64_t n) {
  map_mixed<F, T, T, T>(out, in, in + (F::kIn - second_inputs<F>::value), scalars, n);
}

// Dispatches map<F> on a dtype code with untyped pointers.
template <class F>
void map_dtype(DType dt, void* out, const void* const* in, const float* const* scalars, int64_t n) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* typed[F::kIn];
    for (int k = 0; k < F::kIn; ++k) typed[k] = static_cast<const T*>(in[k]);
    map<F>(static_cast<T*>(out), typed, scalars, n);
  });
}

// Dispatches map_mixed<F>: the output and the first inputs in `dt`, the last kInB inputs in `dt_b`.
template <class F>
void map_mixed_dtype(DType dt, DType dt_b, void* out, const void* const* in, const float* const* scalars,
                     int64_t n) {
  dispatch_mixed<F>(dt, dt_b, in, [&](auto tag, auto tag_b, auto a, auto b) {
    using T = decltype(tag);
    map_mixed<F, T, T, decltype(tag_b)>(static_cast<T*>(out), a, b, scalars, n);
  });
}

// Dispatches map_mixed<F> with every input in `in_dt` and the output in `out_dt`.
template <class F>
void map_cast_dtype(DType out_dt, DType in_dt, void* out, const void* const* in, const float* const* scalars,
                    int64_t n) {
  constexpr int kA = F::kIn - second_inputs<F>::value;
  dispatch_dtype(out_dt, [&](auto tag_o) {
    using TO = decltype(tag_o);
    dispatch_dtype(in_dt, [&](auto tag) {
      using T = decltype(tag);
      const T* typed[F::kIn];
      for (int k = 0; k < F::kIn; ++k) typed[k] = static_cast<const T*>(in[k]);
      map_mixed<F, TO, T, T>(static_cast<TO*>(out), typed, typed + kA, scalars, n);
    });
  });
}

}  // namespace cpu
}  // namespace fastercache
