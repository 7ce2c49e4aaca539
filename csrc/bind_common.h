// Binds the launchers of fastercache/launchers.h into a pybind11 module, one row at a time: Python passes data
// pointers and streams as integers, dtype and metric codes as ints, pointer lists as lists of ints; the
// argument names are the parameter names of the row.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fastercache/common.h"
#include "fastercache/launchers.h"
#include "fastercache/reduce.h"

namespace fastercache {

inline void* ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }
inline DType dtype(int code) {
  if (code < 0 || code > 2) throw std::invalid_argument("fastercache: unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

// What Python passes for a launcher parameter of type T, and its conversion.
template <class T> struct PyArg {  // int64_t, int, bool
  using type = T;
  static T get(T v) { return v; }
};
template <> struct PyArg<DType> {
  using type = int;
  static DType get(int code) { return dtype(code); }
};
template <> struct PyArg<Metric> {
  using type = int;
  static Metric get(int code) { return metric_code(code); }
};
template <class T> struct PyArg<T*> {
  using type = uintptr_t;
  static T* get(uintptr_t p) { return reinterpret_cast<T*>(p); }
};
// Holds the converted pointers until the launcher returns (a temporary of the call expression).
struct PtrList {
  std::vector<const void*> ptrs;
  operator PtrArray() const { return {ptrs.data(), static_cast<int>(ptrs.size())}; }
};
template <> struct PyArg<PtrArray> {
  using type = std::vector<uintptr_t>;
  static PtrList get(const std::vector<uintptr_t>& p) {
    PtrList list;
    list.ptrs.reserve(p.size());
    for (uintptr_t q : p) list.ptrs.push_back(reinterpret_cast<const void*>(q));
    return list;
  }
};

// The parameter names of stringised parameter lists such as "(DType dtype, void* out)" "(, float* workspace)".
inline std::vector<const char*> param_names(std::initializer_list<const char*> decls) {
  static std::deque<std::string> storage;  // pybind11 keeps the pointers for the module's lifetime
  std::vector<const char*> names;
  for (const char* decl : decls) {
    std::string s(decl);
    size_t start = 0;
    while (start < s.size()) {
      size_t end = s.find_first_of(",)", start);
      if (end == std::string::npos) end = s.size();
      std::string part = s.substr(start, end - start);
      size_t last = part.find_last_not_of(" \t\n");
      if (last != std::string::npos) {
        size_t first = part.find_last_of(" \t\n*&(", last);
        std::string name = part.substr(first == std::string::npos ? 0 : first + 1, last - first);
        if (!name.empty()) {
          storage.push_back(name);
          names.push_back(storage.back().c_str());
        }
      }
      start = end + 1;
    }
  }
  return names;
}

template <class R, class... A, size_t... I, class... Extra>
void def_launcher_impl(pybind11::module_& m, const char* name, R (*fn)(A...), const std::vector<const char*>& names,
                       std::index_sequence<I...>, const Extra&... extra) {
  m.def(
      name, [fn](typename PyArg<A>::type... a) -> R { return fn(PyArg<A>::get(a)...); },
      pybind11::arg(names[I])..., extra...);
}

// Binds `fn` as `name`; `names` must name every parameter (a mismatch fails at import, naming the launcher).
template <class R, class... A, class... Extra>
void def_launcher(pybind11::module_& m, const char* name, R (*fn)(A...), const std::vector<const char*>& names,
                  const Extra&... extra) {
  if (names.size() != sizeof...(A))
    throw std::logic_error(std::string("fastercache: launcher ") + name + " has " + std::to_string(sizeof...(A)) +
                           " parameters but its declaration names " + std::to_string(names.size()));
  def_launcher_impl(m, name, fn, names, std::index_sequence_for<A...>{}, extra...);
}

}  // namespace fastercache
