// The _cuda module: launchers over raw device pointers; the stream is passed as an integer
// (torch.cuda.current_stream().cuda_stream). Compiled by the host compiler: no CUDA types appear here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "bind_common.h"
#include "fastercache/launchers.h"

namespace py = pybind11;
using namespace fastercache;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastercache_kernels CUDA launchers (raw device pointers, stream as an integer)";
  m.def(
      "extrapolate",
      [](int dt, uintptr_t out, uintptr_t newer, uintptr_t older, uintptr_t weight, int64_t n, uintptr_t stream) {
        cuda::extrapolate(dtype(dt), ptr(out), ptr(newer), ptr(older), fptr(weight), n, ptr(stream));
      },
      py::arg("dtype"), py::arg("out"), py::arg("newer"), py::arg("older"), py::arg("weight"), py::arg("n"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  // Reductions: `out` and `workspace` are fp32 device buffers (workspace of at least *_workspace(...) floats);
  // strides an int64 host array.
  m.def("feature_diff_workspace", &cuda::feature_diff_workspace, py::arg("rows"), py::arg("cols"));
  m.def(
      "feature_diff",
      [](int dt, uintptr_t out, uintptr_t a, uintptr_t b, int metric, bool partials, int64_t rows, int64_t cols,
         uintptr_t workspace, uintptr_t stream) {
        cuda::feature_diff(dtype(dt), static_cast<float*>(ptr(out)), ptr(a), ptr(b), metric_code(metric), partials,
                           rows, cols, static_cast<float*>(ptr(workspace)), ptr(stream));
      },
      py::arg("dtype"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("metric"), py::arg("partials"),
      py::arg("rows"), py::arg("cols"), py::arg("workspace"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
  m.def("residual_diff_update_workspace", &cuda::residual_diff_update_workspace, py::arg("n"));
  m.def(
      "residual_diff_update",
      [](int dt, int cache_dt, uintptr_t out, uintptr_t output, uintptr_t input, uintptr_t cache, int metric,
         bool partials, int64_t n, uintptr_t workspace, uintptr_t stream) {
        cuda::residual_diff_update(dtype(dt), dtype(cache_dt), static_cast<float*>(ptr(out)), ptr(output),
                                   ptr(input), ptr(cache), metric_code(metric), partials, n,
                                   static_cast<float*>(ptr(workspace)), ptr(stream));
      },
      py::arg("dtype"), py::arg("cache_dtype"), py::arg("out"), py::arg("output"), py::arg("input"), py::arg("cache"),
      py::arg("metric"), py::arg("partials"), py::arg("n"), py::arg("workspace"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
  m.def("motion_score_workspace", &cuda::motion_score_workspace, py::arg("groups"), py::arg("frames"),
        py::arg("frame_size"), py::arg("num_strides"));
  m.def(
      "motion_score",
      [](int dt, uintptr_t out, uintptr_t residual, int64_t groups, int64_t frames, int64_t frame_size,
         uintptr_t strides, int num_strides, bool partials, uintptr_t workspace, uintptr_t stream) {
        cuda::motion_score(dtype(dt), static_cast<float*>(ptr(out)), ptr(residual), groups, frames, frame_size,
                           static_cast<const int64_t*>(ptr(strides)), num_strides, partials,
                           static_cast<float*>(ptr(workspace)), ptr(stream));
      },
      py::arg("dtype"), py::arg("out"), py::arg("residual"), py::arg("groups"), py::arg("frames"),
      py::arg("frame_size"), py::arg("strides"), py::arg("num_strides"), py::arg("partials"), py::arg("workspace"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "cfg_recombine",
      [](int dt, int delta_dt, uintptr_t out, uintptr_t computed, uintptr_t low, uintptr_t high, uintptr_t a,
         uintptr_t b, int64_t n, uintptr_t stream) {
        cuda::cfg_recombine(dtype(dt), dtype(delta_dt), ptr(out), ptr(computed), ptr(low), ptr(high), fptr(a),
                            fptr(b), n, ptr(stream));
      },
      py::arg("dtype"), py::arg("delta_dtype"), py::arg("out"), py::arg("computed"), py::arg("low"),
      py::arg("high"), py::arg("low_weight"), py::arg("high_weight"), py::arg("n"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cfg_recombine_guided",
      [](int dt, int delta_dt, uintptr_t out, uintptr_t computed, uintptr_t low, uintptr_t high, uintptr_t a,
         uintptr_t b, uintptr_t s, int64_t n, uintptr_t stream) {
        cuda::cfg_recombine_guided(dtype(dt), dtype(delta_dt), ptr(out), ptr(computed), ptr(low), ptr(high),
                                   fptr(a), fptr(b), fptr(s), n, ptr(stream));
      },
      py::arg("dtype"), py::arg("delta_dtype"), py::arg("out"), py::arg("computed"), py::arg("low"),
      py::arg("high"), py::arg("low_weight"), py::arg("high_weight"), py::arg("guidance_scale"), py::arg("n"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "cfg_residual_split_diff",
      [](int out_dt, int in_dt, uintptr_t out, uintptr_t a, uintptr_t b, int64_t n, uintptr_t stream) {
        cuda::cfg_residual_split_diff(dtype(out_dt), dtype(in_dt), ptr(out), ptr(a), ptr(b), n, ptr(stream));
      },
      py::arg("out_dtype"), py::arg("in_dtype"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("n"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "extrapolate_residual",
      [](int dt, int cache_dt, uintptr_t x, uintptr_t newer, uintptr_t older, uintptr_t gate, uintptr_t weight,
         int64_t channels, int64_t sample_numel, int64_t gate_stride, int64_t n, uintptr_t stream) {
        cuda::extrapolate_residual(dtype(dt), dtype(cache_dt), ptr(x), ptr(newer), ptr(older), fptr(gate),
                                   fptr(weight), channels, sample_numel, gate_stride, n, ptr(stream));
      },
      py::arg("dtype"), py::arg("cache_dtype"), py::arg("x"), py::arg("newer"), py::arg("older"), py::arg("gate"),
      py::arg("weight"), py::arg("channels"), py::arg("sample_numel"), py::arg("gate_stride"), py::arg("n"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.attr("RESIDUAL_SUM_CAPACITY") = cuda::kResidualSumCapacity;
  m.def(
      "residual_sum",
      [](int dt, uintptr_t out, uintptr_t x, const std::vector<uintptr_t>& residuals, int64_t n,
         uintptr_t workspace, uintptr_t stream) {
        std::vector<const void*> r(residuals.size());
        for (size_t k = 0; k < r.size(); ++k) r[k] = ptr(residuals[k]);
        cuda::residual_sum(dtype(dt), ptr(out), ptr(x), r.data(), static_cast<int>(r.size()), n,
                           static_cast<float*>(ptr(workspace)), ptr(stream));
      },
      py::arg("dtype"), py::arg("out"), py::arg("x"), py::arg("residuals"), py::arg("n"), py::arg("workspace"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
}
