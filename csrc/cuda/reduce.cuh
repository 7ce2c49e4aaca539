// CUDA-side reduction helpers: a fixed-order block sum and the second stage that combines per-block partials.
// No float atomics anywhere: every block writes its partial sums to a workspace and a second kernel combines
// them in an order fixed by the sizes, so results are bit-identical run to run.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "fastercache/reduce.h"

namespace fastercache {
namespace cuda {

constexpr int kWarps = kThreads / 32;

// 16 bytes of loads per tensor per step even when two tensors have different element sizes: N elements of T.
template <class T, int N> struct alignas(sizeof(T) * N) RVec {
  T v[N];
};

// v[k] summed over the block (blockDim.x == kThreads); valid in thread 0. Fixed order: a butterfly inside
// each warp, then warp 0 combines the warps' sums the same way. Ends with a barrier so it can run in a loop.
template <int N> __device__ __forceinline__ void block_sum(float (&v)[N]) {
  __shared__ float warp_sums[N][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < N; ++k) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
    if (lane == 0) warp_sums[k][warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      v[k] = lane < kWarps ? warp_sums[k][lane] : 0.0f;
#pragma unroll
      for (int o = kWarps / 2; o > 0; o >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
    }
  }
  __syncthreads();
}

// Second stage of the feature-difference reductions: block r sums the per_row partials (kDiffSums floats each)
// of row r in a fixed order and writes the metric or the raw sums.
template <Metric M>
__global__ void __launch_bounds__(kThreads) diff_finish_kernel(const float* __restrict__ ws, int64_t per_row,
                                                               float count, bool partials, float* __restrict__ out) {
  const int64_t row = blockIdx.x;
  float s[kDiffSums] = {0.0f, 0.0f, 0.0f};
  const float* p = ws + row * per_row * kDiffSums;
  for (int64_t i = threadIdx.x; i < per_row; i += kThreads)
#pragma unroll
    for (int k = 0; k < kDiffSums; ++k) s[k] += p[i * kDiffSums + k];
  block_sum<kDiffSums>(s);
  if (threadIdx.x == 0) store_diff(M, partials, s, count, out + row * (partials ? kDiffSums : 1));
}

inline void check_grid(int64_t blocks, const char* what) {
  if (blocks > 0x7fffffffLL) throw std::runtime_error(std::string("fastercache CUDA ") + what + ": too many blocks");
}

template <Metric M>
void launch_diff_finish(const float* ws, int64_t rows, int64_t per_row, float count, bool partials, float* out,
                        cudaStream_t stream, const char* what) {
  if (rows <= 0) return;
  check_grid(rows, what);
  diff_finish_kernel<M><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(ws, per_row, count, partials, out);
  check(cudaGetLastError(), what);
}

}  // namespace cuda
}  // namespace fastercache
