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
  // Every launcher of fastercache/launchers.h: the shared parameters, the CUDA-only ones, then the stream.
#define FASTERCACHE_BIND_CUDA(name, params, cuda_params)                                              \
  def_launcher(m, #name, &cuda::name, param_names({#params, #cuda_params, "(stream)"}),       \
               py::call_guard<py::gil_scoped_release>());
  FASTERCACHE_LAUNCHERS(FASTERCACHE_BIND_CUDA)
#undef FASTERCACHE_BIND_CUDA
#define FASTERCACHE_BIND_QUERY(name, params) def_launcher(m, #name, &cuda::name, param_names({#params}));
  FASTERCACHE_CUDA_QUERIES(FASTERCACHE_BIND_QUERY)
#undef FASTERCACHE_BIND_QUERY
  m.attr("RESIDUAL_SUM_CAPACITY") = cuda::kResidualSumCapacity;
}
