#include "fastercache/launchers.h"
#include "fastercache/reduce.h"
#include "reduce.h"

namespace fastercache {
namespace cpu {

namespace {

// Bytes of one frame per work item. Each frame difference re-reads the earlier frame's chunk while it is still in
// L2/L3. Long runs per frame matter more than cache reuse: measured on the 2-core EPYC, [2, 4368, 1920] (T = 13,
// stride 1), one thread, best of 25: 16 KiB chunks 3.98 ms fp32 / 3.70 ms bf16, 128 KiB 3.15 / 2.12 ms,
// 512 KiB 2.44 / 1.71 ms; a feature_diff reading the same bytes twice over takes 2.8 / 1.6 ms.
constexpr int64_t kMotionChunkBytes = 256 << 10;

template <class T>
void motion(float* out, const T* p, int64_t groups, int64_t frames, int64_t frame_size, const int64_t* strides,
            int num_strides, bool partials) {
  constexpr int64_t kMotionChunk = kMotionChunkBytes / sizeof(T);
  const int64_t chunks = (frame_size + kMotionChunk - 1) / kMotionChunk;
  const int width = static_cast<int>(motion_width(frames, num_strides));
  auto item = [&](int64_t i, float* part) {
    const int64_t g = i / chunks, c = i % chunks;
    const int64_t len = std::min(kMotionChunk, frame_size - c * kMotionChunk);
    const T* base = p + g * frames * frame_size + c * kMotionChunk;
    for (int64_t t = 0; t < frames; ++t) {
      const T* x = base + t * frame_size;
      int s = 0;
      if (t >= strides[0]) {
        // The frame sum and the first stride's difference in one sweep: each x converted once (measured on the
        // 2-core EPYC, [2, 4368, 1920] bf16, one thread: 3.7 ms with separate sweeps).
        const T* y = base + (t - strides[0]) * frame_size;
        float r[2];
        lane_sum<2>(len, [&](int64_t k, float (&acc)[2][kLanes], int j) {
          const float xv = to_float(x[k]);
          acc[0][j] += abs_f(xv);
          acc[1][j] += abs_f(xv - to_float(y[k]));
        }, r);
        part[t] = r[0];
        part[frames] += r[1];  // frame order: fixed
        s = 1;
      } else {
        lane_sum<1>(len, [&](int64_t k, float (&acc)[1][kLanes], int j) { acc[0][j] += abs_f(to_float(x[k])); },
                    part + t);
      }
      for (; s < num_strides; ++s) {
        if (t < strides[s]) continue;
        const T* y = base + (t - strides[s]) * frame_size;
        float d;
        lane_sum<1>(len, [&](int64_t k, float (&acc)[1][kLanes], int j) {
          acc[0][j] += abs_f(to_float(x[k]) - to_float(y[k]));
        }, &d);
        part[frames + s] += d;
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
