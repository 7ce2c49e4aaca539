// Reduction math shared by the CPU loops and the CUDA kernels: the terms each metric sums, and how the summed
// partials turn into the metric. Host-device, so the CPU module's tests exercise what the CUDA kernels compile.
//
// Every reduction here is computed the same way on every backend: fixed-size blocks of the input are reduced
// into per-block partial sums (fp32), and the partials are combined in an order fixed by the sizes alone, never
// by the thread count or by which thread finishes first. The result is bit-identical from run to run.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastercache/common.h"

namespace fastercache {

// Metric codes passed from Python (fastercache_kernels/ops/_reduce.py keeps the same table).
enum class Metric : int { l1 = 0, rel_l1 = 1, rel_l2 = 2, cosine = 3 };

// Every feature-difference metric is a function of three raw sums (see finalize_metric):
//   l1:     sum|a-b|, count, 0           rel_l1: sum|a-b|, sum|b|, 0
//   rel_l2: sum (a-b)^2, sum b^2, 0      cosine: sum a*b, sum a^2, sum b^2
// The count of l1 is not accumulated: the launchers write the row length.
constexpr int kDiffSums = 3;

FC_HD float abs_f(float x) {
#if defined(__CUDA_ARCH__)
  return fabsf(x);
#else
  return std::fabs(x);
#endif
}

FC_HD float sqrt_f(float x) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(x);  // correctly rounded, as torch.sqrt and std::sqrt are
#else
  return std::sqrt(x);
#endif
}

FC_HD float div_f(float x, float y) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(x, y);
#else
  return x / y;
#endif
}

// The contribution of one element pair (a, b) to the three sums of metric M.
template <Metric M> struct DiffTerm;
template <> struct DiffTerm<Metric::l1> {
  static FC_HD void add(float a, float b, float& s0, float&, float&) { s0 += abs_f(a - b); }
};
template <> struct DiffTerm<Metric::rel_l1> {
  static FC_HD void add(float a, float b, float& s0, float& s1, float&) {
    s0 += abs_f(a - b);
    s1 += abs_f(b);
  }
};
template <> struct DiffTerm<Metric::rel_l2> {
  static FC_HD void add(float a, float b, float& s0, float& s1, float&) {
    const float d = a - b;
    s0 += d * d;
    s1 += b * b;
  }
};
template <> struct DiffTerm<Metric::cosine> {
  static FC_HD void add(float a, float b, float& s0, float& s1, float& s2) {
    s0 += a * b;
    s1 += a * a;
    s2 += b * b;
  }
};

// The metric from its three sums. fastercache_kernels.ops.feature_diff_from_partials evaluates the same
// expressions in the same order with torch's fp32 ops (each correctly rounded), so the two agree bit for bit.
FC_HD float finalize_metric(Metric m, const float* s) {
  switch (m) {
    case Metric::l1:
    case Metric::rel_l1: return div_f(s[0], s[1]);
    case Metric::rel_l2: return div_f(sqrt_f(s[0]), sqrt_f(s[1]));
    case Metric::cosine: return 1.0f - div_f(s[0], sqrt_f(s[1]) * sqrt_f(s[2]));
  }
  return 0.0f;
}

// Writes row results: the metric (partials == false) or its three raw sums, with l1's count filled in.
FC_HD void store_diff(Metric m, bool partials, const float* s, float count, float* out) {
  if (!partials) {
    float t[kDiffSums] = {s[0], m == Metric::l1 ? count : s[1], s[2]};
    out[0] = finalize_metric(m, t);
    return;
  }
  out[0] = s[0];
  out[1] = m == Metric::l1 ? count : s[1];
  out[2] = s[2];
}

// A metric code from Python, checked (the bindings call this; Python validates names first).
inline Metric metric_code(int code) {
  if (code < 0 || code > 3) throw std::invalid_argument("fastercache: unknown metric code " + std::to_string(code));
  return static_cast<Metric>(code);
}

// Calls f(std::integral_constant<Metric, M>{}) for the metric named by a code.
template <class F> inline void dispatch_metric(Metric m, F&& f) {
  switch (m) {
    case Metric::l1: f(std::integral_constant<Metric, Metric::l1>{}); break;
    case Metric::rel_l1: f(std::integral_constant<Metric, Metric::rel_l1>{}); break;
    case Metric::rel_l2: f(std::integral_constant<Metric, Metric::rel_l2>{}); break;
    case Metric::cosine: f(std::integral_constant<Metric, Metric::cosine>{}); break;
  }
}

// motion_score. The residual is viewed as [G, T, F]: G independent groups (batch, or batch x channels), T frames,
// F elements per frame. Its partial sums are laid out per work item as [T frame sums | K difference sums]:
//   A_t = sum |p_t|,   N_k = sum_t |p_{t+s_k} - p_t|   (s_k = strides[k], t = 0 .. T-1-s_k).
// m_k = N_k / D_k with D_k = sum_{t >= s_k} A_t + sum_{t <= T-1-s_k} A_t (the two frame ranges being compared).
// At most this many strides per call (the CUDA kernels take them by value); Python checks it first.
constexpr int kMotionMaxStrides = 64;

FC_HD int64_t motion_width(int64_t frames, int num_strides) { return frames + num_strides; }

// From the combined sums `s` (motion_width values): out[k] = m_k, or out[k] = (N_k, D_k) when partials.
template <class S>
FC_HD void store_motion(const float* s, int64_t frames, const S* strides, int num_strides, bool partials,
                        float* out) {
  for (int k = 0; k < num_strides; ++k) {
    const int64_t st = strides[k];
    float tail = 0.0f, head = 0.0f;  // frames s..T-1 and frames 0..T-1-s, each summed in frame order
    for (int64_t t = st; t < frames; ++t) tail += s[t];
    for (int64_t t = 0; t < frames - st; ++t) head += s[t];
    const float num = s[frames + k];
    const float den = tail + head;
    if (partials) {
      out[2 * k] = num;
      out[2 * k + 1] = den;
    } else {
      out[k] = div_f(num, den);
    }
  }
}

}  // namespace fastercache
