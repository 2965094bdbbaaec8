// Shared declarations for the tensorlite._C extension: one bind_* function per op
// family (each defined in that family's .cpp), all registered in module.cpp.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

namespace py = pybind11;

void bind_threads(py::module_& m);
void bind_softmax(py::module_& m);
void bind_layer_norm(py::module_& m);
void bind_attention(py::module_& m);
void bind_cross_entropy(py::module_& m);
void bind_gelu(py::module_& m);
void bind_adamw(py::module_& m);
void bind_gemm(py::module_& m);
