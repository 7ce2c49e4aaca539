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
  // Every launcher of fastercache/launchers.h, without the GIL (the loops never touch Python objects).
#define FASTERCACHE_BIND_CPU(name, params, cuda_params)                              \
  def_launcher(m, #name, &cpu::name, param_names({#params}), py::call_guard<py::gil_scoped_release>());
  FASTERCACHE_LAUNCHERS(FASTERCACHE_BIND_CPU)
#undef FASTERCACHE_BIND_CPU
}
