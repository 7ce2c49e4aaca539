// The _cuda module: launchers over raw device pointers; the stream is passed as an integer
// (torch.cuda.current_stream().cuda_stream). Compiled by the host compiler: no CUDA types appear here.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

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
}
