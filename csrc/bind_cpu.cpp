// The _cpu module: OpenMP launchers over raw host pointers. No libtorch: Python passes data_ptr() integers.
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "bind_common.h"
#include "fastercache/launchers.h"

namespace py = pybind11;
using namespace fastercache;

// Built twice (see CMakeLists.txt): as _cpu with baseline flags and as _cpu_avx2 for x86-64-v3.
#ifndef FASTERCACHE_CPU_MODULE
#define FASTERCACHE_CPU_MODULE _cpu
#endif

PYBIND11_MODULE(FASTERCACHE_CPU_MODULE, m) {
  m.doc() = "fastercache_kernels CPU launchers (OpenMP, raw pointers)";
  m.def("set_num_threads", [](int n) { omp_set_num_threads(n > 0 ? n : 1); });
  m.def("max_threads", [] { return omp_get_max_threads(); });
  // Test hooks: the fp16/bf16 conversions every kernel uses, over whole arrays, so tests can check them
  // exhaustively against torch's casts.
  m.def("_to_float", [](int dt, uintptr_t out, uintptr_t in, int64_t n) {
    dispatch_dtype(dtype(dt), [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(ptr(in));
      float* dst = static_cast<float*>(ptr(out));
      for (int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
    });
  });
  m.def("_from_float", [](int dt, uintptr_t out, uintptr_t in, int64_t n) {
    dispatch_dtype(dtype(dt), [&](auto tag) {
      using T = decltype(tag);
      const float* src = static_cast<const float*>(ptr(in));
      T* dst = static_cast<T*>(ptr(out));
      for (int64_t i = 0; i < n; ++i) dst[i] = from_float<T>(src[i]);
    });
  });
  m.def(
      "extrapolate",
      [](int dt, uintptr_t out, uintptr_t newer, uintptr_t older, uintptr_t weight, int64_t n) {
        cpu::extrapolate(dtype(dt), ptr(out), ptr(newer), ptr(older), fptr(weight), n);
      },
      py::arg("dtype"), py::arg("out"), py::arg("newer"), py::arg("older"), py::arg("weight"), py::arg("n"),
      py::call_guard<py::gil_scoped_release>());
  // Reductions: `out` is an fp32 host buffer; metric codes as fastercache::Metric; strides an int64 host array.
  m.def(
      "feature_diff",
      [](int dt, uintptr_t out, uintptr_t a, uintptr_t b, int metric, bool partials, int64_t rows, int64_t cols) {
        cpu::feature_diff(dtype(dt), static_cast<float*>(ptr(out)), ptr(a), ptr(b), metric_code(metric), partials,
                          rows, cols);
      },
      py::arg("dtype"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("metric"), py::arg("partials"),
      py::arg("rows"), py::arg("cols"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "residual_diff_update",
      [](int dt, int cache_dt, uintptr_t out, uintptr_t output, uintptr_t input, uintptr_t cache, int metric,
         bool partials, int64_t n) {
        cpu::residual_diff_update(dtype(dt), dtype(cache_dt), static_cast<float*>(ptr(out)), ptr(output), ptr(input),
                                  ptr(cache), metric_code(metric), partials, n);
      },
      py::arg("dtype"), py::arg("cache_dtype"), py::arg("out"), py::arg("output"), py::arg("input"), py::arg("cache"),
      py::arg("metric"), py::arg("partials"), py::arg("n"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "motion_score",
      [](int dt, uintptr_t out, uintptr_t residual, int64_t groups, int64_t frames, int64_t frame_size,
         uintptr_t strides, int num_strides, bool partials) {
        cpu::motion_score(dtype(dt), static_cast<float*>(ptr(out)), ptr(residual), groups, frames, frame_size,
                          static_cast<const int64_t*>(ptr(strides)), num_strides, partials);
      },
      py::arg("dtype"), py::arg("out"), py::arg("residual"), py::arg("groups"), py::arg("frames"),
      py::arg("frame_size"), py::arg("strides"), py::arg("num_strides"), py::arg("partials"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cfg_recombine",
      [](int dt, int delta_dt, uintptr_t out, uintptr_t computed, uintptr_t low, uintptr_t high, uintptr_t a,
         uintptr_t b, int64_t n) {
        cpu::cfg_recombine(dtype(dt), dtype(delta_dt), ptr(out), ptr(computed), ptr(low), ptr(high), fptr(a),
                           fptr(b), n);
      },
      py::arg("dtype"), py::arg("delta_dtype"), py::arg("out"), py::arg("computed"), py::arg("low"),
      py::arg("high"), py::arg("low_weight"), py::arg("high_weight"), py::arg("n"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cfg_recombine_guided",
      [](int dt, int delta_dt, uintptr_t out, uintptr_t computed, uintptr_t low, uintptr_t high, uintptr_t a,
         uintptr_t b, uintptr_t s, int64_t n) {
        cpu::cfg_recombine_guided(dtype(dt), dtype(delta_dt), ptr(out), ptr(computed), ptr(low), ptr(high),
                                  fptr(a), fptr(b), fptr(s), n);
      },
      py::arg("dtype"), py::arg("delta_dtype"), py::arg("out"), py::arg("computed"), py::arg("low"),
      py::arg("high"), py::arg("low_weight"), py::arg("high_weight"), py::arg("guidance_scale"), py::arg("n"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cfg_residual_split_diff",
      [](int out_dt, int in_dt, uintptr_t out, uintptr_t a, uintptr_t b, int64_t n) {
        cpu::cfg_residual_split_diff(dtype(out_dt), dtype(in_dt), ptr(out), ptr(a), ptr(b), n);
      },
      py::arg("out_dtype"), py::arg("in_dtype"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("n"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "extrapolate_residual",
      [](int dt, int cache_dt, uintptr_t x, uintptr_t newer, uintptr_t older, uintptr_t gate, uintptr_t weight,
         int64_t channels, int64_t sample_numel, int64_t gate_stride, int64_t n) {
        cpu::extrapolate_residual(dtype(dt), dtype(cache_dt), ptr(x), ptr(newer), ptr(older), fptr(gate),
                                  fptr(weight), channels, sample_numel, gate_stride, n);
      },
      py::arg("dtype"), py::arg("cache_dtype"), py::arg("x"), py::arg("newer"), py::arg("older"), py::arg("gate"),
      py::arg("weight"), py::arg("channels"), py::arg("sample_numel"), py::arg("gate_stride"), py::arg("n"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "residual_sum",
      [](int dt, uintptr_t out, uintptr_t x, const std::vector<uintptr_t>& residuals, int64_t n) {
        std::vector<const void*> r(residuals.size());
        for (size_t k = 0; k < r.size(); ++k) r[k] = ptr(residuals[k]);
        cpu::residual_sum(dtype(dt), ptr(out), ptr(x), r.data(), static_cast<int>(r.size()), n);
      },
      py::arg("dtype"), py::arg("out"), py::arg("x"), py::arg("residuals"), py::arg("n"),
      py::call_guard<py::gil_scoped_release>());
}
