#include "fastercache/launchers.h"
#include "reduce.cuh"

namespace fastercache {
namespace cuda {

namespace {

// Elements of one frame per block: one or two 128-bit loads per thread per frame. The frame differences re-read
// the earlier frame's chunk (T x 8 KiB per block at fp32), which is still in L1/L2: one pass over DRAM.
constexpr int64_t kChunk = 2048;

struct Strides {
  int32_t s[kMotionMaxStrides];
};

// Sum over this thread's elements of the chunk (len elements) of |x| (kDiff false) or |x - y| (kDiff true).
template <bool kDiff, class T, bool kVec>
__device__ __forceinline__ float chunk_sum(const T* __restrict__ x, const T* __restrict__ y, int64_t len) {
  auto term = [](float a, float b) { return kDiff ? abs_f(a - b) : abs_f(a); };
  float acc = 0.0f;
  int64_t done = 0;
  if (kVec) {
    constexpr int V = Pack<T>::kN;
    constexpr int kPer = kChunk / (kThreads * V);  // packs per thread in a full chunk: all loads issued at once
    const int nvec = static_cast<int>(len / V);
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = threadIdx.x + u * kThreads;
      if (i < nvec) {
        const Pack<T> a = reinterpret_cast<const Pack<T>*>(x)[i];
        Pack<T> b;
        if (kDiff) b = reinterpret_cast<const Pack<T>*>(y)[i];
#pragma unroll
        for (int j = 0; j < V; ++j) acc += term(to_float(a.v[j]), kDiff ? to_float(b.v[j]) : 0.0f);
      }
    }
    done = nvec * V;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += kThreads)
    acc += term(to_float(x[i]), kDiff ? to_float(y[i]) : 0.0f);
  return acc;
}

// Block i handles chunk i % chunks of every frame of group i / chunks and writes its motion_width partials:
// the frame sums A_t, then each stride's difference sum N_k (accumulated over t in frame order).
template <class T, bool kVec>
__global__ void __launch_bounds__(kThreads) motion_partials_kernel(const T* __restrict__ p, int64_t frames,
                                                                   int64_t frame_size, int64_t chunks,
                                                                   Strides strides, int num_strides,
                                                                   float* __restrict__ ws) {
  const int64_t item = blockIdx.x;
  const int64_t g = item / chunks, c = item % chunks;
  const int64_t len = min(kChunk, frame_size - c * kChunk);
  const T* base = p + g * frames * frame_size + c * kChunk;
  float* part = ws + item * motion_width(frames, num_strides);
  for (int64_t t = 0; t < frames; ++t) {
    const T* x = base + t * frame_size;
    float v[1] = {chunk_sum<false, T, kVec>(x, x, len)};
    block_sum<1>(v);
    if (threadIdx.x == 0) part[t] = v[0];
  }
  for (int k = 0; k < num_strides; ++k) {
    const int64_t st = strides.s[k];
    float v[1] = {0.0f};
    for (int64_t t = st; t < frames; ++t)
      v[0] += chunk_sum<true, T, kVec>(base + t * frame_size, base + (t - st) * frame_size, len);
    block_sum<1>(v);
    if (threadIdx.x == 0) part[frames + k] = v[0];
  }
}

// One block: column w of the [items, width] partials summed in a fixed order into tot[w]; then thread 0 (which
// wrote every tot[w] itself) forms the results.
__global__ void __launch_bounds__(kThreads) motion_finish_kernel(const float* __restrict__ ws, int64_t items,
                                                                 int64_t frames, Strides strides, int num_strides,
                                                                 bool partials, float* __restrict__ tot,
                                                                 float* __restrict__ out) {
  const int64_t width = motion_width(frames, num_strides);
  for (int64_t w = 0; w < width; ++w) {
    float v[1] = {0.0f};
    for (int64_t i = threadIdx.x; i < items; i += kThreads) v[0] += ws[i * width + w];
    block_sum<1>(v);
    if (threadIdx.x == 0) tot[w] = v[0];
  }
  if (threadIdx.x == 0) store_motion(tot, frames, strides.s, num_strides, partials, out);
}

int64_t chunks_of(int64_t frame_size) { return (frame_size + kChunk - 1) / kChunk; }

}  // namespace

int64_t motion_score_workspace(int64_t groups, int64_t frames, int64_t frame_size, int num_strides) {
  const int64_t width = motion_width(frames, num_strides);
  return groups * chunks_of(frame_size) * width + width;
}

void motion_score(DType dt, float* out, const void* residual, int64_t groups, int64_t frames, int64_t frame_size,
                  const int64_t* strides, int num_strides, bool partials, float* workspace, void* stream) {
  if (num_strides < 1 || num_strides > kMotionMaxStrides)
    throw std::invalid_argument("fastercache CUDA motion_score: between 1 and kMotionMaxStrides strides");
  Strides st{};
  for (int k = 0; k < num_strides; ++k) st.s[k] = static_cast<int32_t>(strides[k]);
  const int64_t chunks = chunks_of(frame_size);
  const int64_t items = groups * chunks;
  float* tot = workspace + items * motion_width(frames, num_strides);
  cudaStream_t s = as_stream(stream);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(residual);
    if (items > 0) {
      check_grid(items, "motion_score");
      if (aligned16(p) && frame_size % Pack<T>::kN == 0)
        motion_partials_kernel<T, true><<<static_cast<unsigned>(items), kThreads, 0, s>>>(
            p, frames, frame_size, chunks, st, num_strides, workspace);
      else
        motion_partials_kernel<T, false><<<static_cast<unsigned>(items), kThreads, 0, s>>>(
            p, frames, frame_size, chunks, st, num_strides, workspace);
      check(cudaGetLastError(), "motion_score");
    }
  });
  motion_finish_kernel<<<1, kThreads, 0, s>>>(workspace, items, frames, st, num_strides, partials, tot, out);
  check(cudaGetLastError(), "motion_score");
}

}  // namespace cuda
}  // namespace fastercache
