// Every launcher of the two compiled modules. Pointers are raw (host pointers for fastercache::cpu, device
// pointers for fastercache::cuda); per-step scalars are read through fp32 pointers so a CUDA caller never has
// to synchronise to pass them. CUDA launchers take the stream as an opaque pointer and throw
// std::runtime_error (RuntimeError in Python) when the runtime reports an error.
#pragma once

#include <cstdint>

#include "fastercache/common.h"

namespace fastercache {
namespace cpu {

void extrapolate(DType dt, void* out, const void* newer, const void* older, const float* weight, int64_t n);

}  // namespace cpu

namespace cuda {

void extrapolate(DType dt, void* out, const void* newer, const void* older, const float* weight, int64_t n,
                 void* stream);

}  // namespace cuda
}  // namespace fastercache
