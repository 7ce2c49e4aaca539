// Header-only pieces shared by the CPU module and the CUDA kernels: dtype codes, fp16/bf16 storage types and
// their conversions to and from fp32. Everything here is __host__ __device__ so one definition of the math
// serves both builds, and the CPU module's tests exercise what the CUDA kernels compile.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define FC_HD __host__ __device__ __forceinline__
#else
#define FC_HD inline
#endif

namespace fastercache {

// Dtype codes passed from Python (fastercache_kernels/ops/_common.py keeps the same table).
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

// Storage types: plain 16-bit words on the host and the device alike, so kernels template on them.
struct f16 { uint16_t bits; };
struct bf16 { uint16_t bits; };

FC_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

FC_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// IEEE binary16 -> fp32, exact (every half is a float). Branch-free on the host so the CPU loops vectorise.
FC_HD float f16_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t shifted = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent and mantissa in place
  const uint32_t exp = shifted & 0x0f800000u;
  const uint32_t normal = shifted + (112u << 23);                    // rebias 15 -> 127
  const uint32_t infnan = normal + (112u << 23);                     // exponent 31 -> 255
  // subnormal or zero: m * 2^-24 = (2^-14 * (1 + m/1024)) - 2^-14, exact in fp32
  const uint32_t sub = float_bits(bits_float(normal + (1u << 23)) - bits_float(113u << 23));
  const uint32_t mag = exp == 0x0f800000u ? infnan : (exp == 0 ? sub : normal);
  return bits_float(sign | mag);
#endif
}

// fp32 -> binary16, round to nearest even; overflow to inf, NaN stays NaN. Branch-free on the host.
FC_HD uint16_t float_to_f16(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t all = float_bits(f);
  const uint32_t sign = all & 0x80000000u;
  const uint32_t u = all ^ sign;
  // |f| >= 65536 (or inf, NaN): the half is inf, or a quiet NaN
  const uint32_t big = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // |f| < 2^-14: subnormal or zero. Adding 0.5 lines the half's mantissa up with the float's low bits and the
  // fp32 add rounds to nearest even.
  const uint32_t sub = float_bits(bits_float(u) + 0.5f) - 0x3f000000u;
  // normal: rebias the exponent and round the 13 dropped bits to nearest even; a carry out of the mantissa
  // bumps the exponent, up to inf for |f| >= 65520.
  const uint32_t normal = (u + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const uint32_t o = u >= 0x47800000u ? big : (u < 0x38800000u ? sub : normal);
  return static_cast<uint16_t>(o | (sign >> 16));
#endif
}

FC_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// fp32 -> bfloat16, round to nearest even; NaN stays a (quiet) NaN. Branch-free on the host.
FC_HD uint16_t float_to_bf16(float f) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  const uint32_t u = float_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
#endif
}

// Kernels read and write element storage only through to_float / from_float.
FC_HD float to_float(float v) { return v; }
FC_HD float to_float(f16 v) { return f16_to_float(v.bits); }
FC_HD float to_float(bf16 v) { return bf16_to_float(v.bits); }
template <class T> FC_HD T from_float(float v);
template <> FC_HD float from_float<float>(float v) { return v; }
template <> FC_HD f16 from_float<f16>(float v) { return f16{float_to_f16(v)}; }
template <> FC_HD bf16 from_float<bf16>(float v) { return bf16{float_to_bf16(v)}; }

// Calls f(T{}) with the storage type T named by a dtype code.
template <class F> inline void dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(f16{}); break;
    case DType::bf16: f(bf16{}); break;
  }
}

}  // namespace fastercache
