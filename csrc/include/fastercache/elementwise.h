// Elementwise functors: the arithmetic of every map-style op, shared by the CPU loops and the CUDA kernels.
// A functor declares how many tensor inputs (kIn) and fp32 scalars (kScalars) it reads and computes one
// output element in fp32 from x[kIn] and s[kScalars]; the loops round the result once to the storage type.
#pragma once

#include "fastercache/common.h"

namespace fastercache {

// extrapolate: newer + w * (newer - older)        x = {newer, older}, s = {w}
struct ExtrapolateF {
  static constexpr int kIn = 2;
  static constexpr int kScalars = 1;
  static FC_HD float apply(const float* x, const float* s) { return x[0] + s[0] * (x[0] - x[1]); }
};

}  // namespace fastercache
