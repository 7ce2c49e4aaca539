#include "common.cuh"
#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"

namespace fastercache {
namespace cuda {

void cfg_residual_split_diff(DType out_dt, DType in_dt, void* out, const void* a, const void* b, int64_t n,
                             void* stream) {
  const void* in[] = {a, b};
  launch_map_cast_dtype<DifferenceF>(out_dt, in_dt, out, in, nullptr, n, stream, "cfg_residual_split");
}

}  // namespace cuda
}  // namespace fastercache
