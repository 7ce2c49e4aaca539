// Conversions shared by the two binding files: Python passes data pointers and streams as integers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastercache/common.h"

namespace fastercache {

inline void* ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }
inline const float* fptr(uintptr_t p) { return reinterpret_cast<const float*>(p); }
inline DType dtype(int code) {
  if (code < 0 || code > 2) throw std::invalid_argument("fastercache: unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

}  // namespace fastercache
