#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"
#include "parallel.h"

namespace fastercache {
namespace cpu {

// Both elementwise passes of the split: R = other - computed (inputs in the model dtype, R in fp32 for the FFT)
// and high = R - low (fp32 inputs, high in the storage dtype).
void cfg_residual_split_diff(DType out_dt, DType in_dt, void* out, const void* a, const void* b, int64_t n) {
  const void* in[] = {a, b};
  map_cast_dtype<DifferenceF>(out_dt, in_dt, out, in, nullptr, n);
}

}  // namespace cpu
}  // namespace fastercache
