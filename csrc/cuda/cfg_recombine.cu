#include "common.cuh"
#include "fastercache/elementwise.h"
#include "fastercache/launchers.h"

namespace fastercache {
namespace cuda {

void cfg_recombine(DType dt, DType delta_dt, void* out, const void* computed, const void* low, const void* high,
                   const float* low_weight, const float* high_weight, int64_t n, void* stream) {
  const void* in[] = {computed, low, high};
  const float* s[] = {low_weight, high_weight};
  launch_map_mixed_dtype<CfgRecombineF>(dt, delta_dt, out, in, s, n, stream, "cfg_recombine");
}

void cfg_recombine_guided(DType dt, DType delta_dt, void* out, const void* computed, const void* low,
                          const void* high, const float* low_weight, const float* high_weight,
                          const float* guidance_scale, int64_t n, void* stream) {
  const void* in[] = {computed, low, high};
  const float* s[] = {low_weight, high_weight, guidance_scale};
  launch_map_mixed_dtype<CfgRecombineGuidedF>(dt, delta_dt, out, in, s, n, stream, "cfg_recombine_guided");
}

}  // namespace cuda
}  // namespace fastercache
