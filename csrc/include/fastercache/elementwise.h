// Elementwise functors: the arithmetic of every map-style op, shared by the CPU loops and the CUDA kernels.
// A functor declares how many tensor inputs (kIn) and fp32 scalars (kScalars) it reads and computes one
// output element in fp32 from x[kIn] and s[kScalars]; the loops round the result once to the storage type.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastercache/common.h"

namespace fastercache {

// The functors write apply as a template over the value type: float on the GPU and in scalar loops, an
// eight-lane vector in the CPU module's x86-64-v3 build (parallel.h), with the same operations in the same order.
// A functor may read its last kInB inputs in a second storage dtype (cached bf16 deltas next to an fp32 model
// output, say). second_inputs<F>::value is that count: F::kInB when declared, else 0.
template <class F, class = void> struct second_inputs {
  static constexpr int value = 0;
};
template <class F> struct second_inputs<F, std::void_t<decltype(F::kInB)>> {
  static constexpr int value = F::kInB;
};

// Calls f(T{}, U{}, a, b) with the untyped inputs of functor F as typed pointer arrays: the first kIn - kInB (a) in
// the storage type T named by `dt`, the last kInB (b) in the type U named by `dt_b`. The one mixed-dtype dispatch
// of the CPU loops (parallel.h) and the CUDA launchers (common.cuh).
template <class F, class Fn> inline void dispatch_mixed(DType dt, DType dt_b, const void* const* in, Fn&& f) {
  constexpr int kB = second_inputs<F>::value;
  constexpr int kA = F::kIn - kB;
  dispatch_dtype(dt, [&](auto tag) {
    dispatch_dtype(dt_b, [&](auto tag_b) {
      using T = decltype(tag);
      using U = decltype(tag_b);
      const T* a[kA > 0 ? kA : 1];
      const U* b[kB > 0 ? kB : 1];
      for (int k = 0; k < kA; ++k) a[k] = static_cast<const T*>(in[k]);
      for (int k = 0; k < kB; ++k) b[k] = static_cast<const U*>(in[kA + k]);
      f(tag, tag_b, a, b);
    });
  });
}

// cfg_recombine: computed + a * low + b * high      x = {computed | low, high}, s = {a, b}
// Evaluated left to right like the eager expression, so in fp32 the CPU result equals torch's bit for bit.
struct CfgRecombineF {
  static constexpr int kIn = 3;
  static constexpr int kInB = 2;
  static constexpr int kScalars = 2;
  template <class V> static FC_HD V apply(const V* x, const float* s) { return x[0] + s[0] * x[1] + s[1] * x[2]; }
};

// cfg_recombine_guided: computed + (1 - g) * (a * low + b * high)      x = {computed | low, high}, s = {a, b, g}
struct CfgRecombineGuidedF {
  static constexpr int kIn = 3;
  static constexpr int kInB = 2;
  static constexpr int kScalars = 3;
  template <class V> static FC_HD V apply(const V* x, const float* s) {
    return x[0] + (1.0f - s[2]) * (s[0] * x[1] + s[1] * x[2]);
  }
};

// cfg_residual_split's elementwise parts: R = other - computed, and high = R - low       x = {a, b}
struct DifferenceF {
  static constexpr int kIn = 2;
  static constexpr int kScalars = 0;
  template <class V> static FC_HD V apply(const V* x, const float*) { return x[0] - x[1]; }
};

// forecast: x + w[0] * h[0] + ... + w[K-1] * h[K-1]     x = {h[0], ..., h[K-1] | x}, s = {w[0], ..., w[K-1]}
// Slot order, one rounding per add and multiply (the reference's order); a slot of weight exactly 0 is left out,
// so NaN or Inf in an unused slot of the ring buffer never reaches the forecast. Without x the sum starts at 0.
// The weight test is on a scalar, so on vectors it is a uniform branch, not a per-lane select.
template <int K, bool kHasX> struct ForecastF {
  static constexpr int kIn = K + (kHasX ? 1 : 0);
  static constexpr int kScalars = K;
  template <class V> static FC_HD V apply(const V* x, const float* s) {
    V acc{};
    if constexpr (kHasX) acc = x[K];
    for (int k = 0; k < K; ++k)  // K is a constant: unrolled
      if (s[k] != 0.0f) acc = acc + s[k] * x[k];
    return acc;
  }
};

// The most slots a forecast reads (a ring buffer of up to 4 values: Taylor orders up to 3).
constexpr int kForecastMaxSlots = 4;

// Calls fn(std::integral_constant<int, K>{}, std::bool_constant<has_x>{}) for K = slots in [1, 4]: the one
// instantiation of ForecastF the CPU loop and the CUDA launcher run.
template <class Fn> inline void dispatch_forecast(int slots, bool has_x, Fn&& fn) {
  auto with_x = [&](auto k) {
    if (has_x)
      fn(k, std::true_type{});
    else
      fn(k, std::false_type{});
  };
  switch (slots) {
    case 1: return with_x(std::integral_constant<int, 1>{});
    case 2: return with_x(std::integral_constant<int, 2>{});
    case 3: return with_x(std::integral_constant<int, 3>{});
    case 4: return with_x(std::integral_constant<int, 4>{});
    default:
      throw std::invalid_argument("fastercache forecast: " + std::to_string(slots) + " history slots; 1 to " +
                                  std::to_string(kForecastMaxSlots) + " are supported");
  }
}

}  // namespace fastercache
