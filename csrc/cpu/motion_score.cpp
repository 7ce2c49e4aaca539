#include "fastercache/launchers.h"
#include "fastercache/reduce.h"
#include "reduce.h"

namespace fastercache {
namespace cpu {

namespace {

// Elements of one frame per work item. Every frame difference re-reads the earlier frame's chunk while it is
// still in L2 (T = 13 frames of 4096 fp32 = 208 KiB), so memory sees one pass over the residual.
constexpr int64_t kMotionChunk = 4096;

template <class T>
void motion(float* out, const T* p, int64_t groups, int64_t frames, int64_t frame_size, const int64_t* strides,
            int num_strides, bool partials) {
  const int64_t chunks = (frame_size + kMotionChunk - 1) / kMotionChunk;
  const int width = static_cast<int>(motion_width(frames, num_strides));
  auto item = [&](int64_t i, float* part) {
    const int64_t g = i / chunks, c = i % chunks;
    const int64_t len = std::min(kMotionChunk, frame_size - c * kMotionChunk);
    const T* base = p + g * frames * frame_size + c * kMotionChunk;
    for (int64_t t = 0; t < frames; ++t) {
      const T* x = base + t * frame_size;
      lane_sum<1>(len, [&](int64_t k, float (&acc)[1][kLanes], int j) { acc[0][j] += abs_f(to_float(x[k])); },
                  part + t);
      for (int s = 0; s < num_strides; ++s) {
        if (t < strides[s]) continue;
        const T* y = base + (t - strides[s]) * frame_size;
        float d;
        lane_sum<1>(len, [&](int64_t k, float (&acc)[1][kLanes], int j) {
          acc[0][j] += abs_f(to_float(x[k]) - to_float(y[k]));
        }, &d);
        part[frames + s] += d;  // frame order: fixed
      }
    }
  };
  blocked_reduce(1, groups * chunks, width, threads_for(groups * frames * frame_size), item,
                 [&](int64_t, const float* s) { store_motion(s, frames, strides, num_strides, partials, out); });
}

}  // namespace

void motion_score(DType dt, float* out, const void* residual, int64_t groups, int64_t frames, int64_t frame_size,
                  const int64_t* strides, int num_strides, bool partials) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    motion(out, static_cast<const T*>(residual), groups, frames, frame_size, strides, num_strides, partials);
  });
}

}  // namespace cpu
}  // namespace fastercache
