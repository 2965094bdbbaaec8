"""Builds the C++ extension tensorlite._C from csrc/ and maps kernels/ to tensorlite.kernels.

Everything else is declared in pyproject.toml. Set TENSORLITE_NATIVE=1 to compile
with -march=native (faster on the build machine, not portable to others), TL_NO_CLONES=1
to compile each kernel once instead of for AVX-512, AVX2 and baseline CPUs.
"""
import glob
import os
import sys
import tempfile

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup


def _compiler_accepts(flag: str) -> bool:
    import subprocess
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write("int main(){return 0;}\n")
        r = subprocess.run([cxx, flag, src, "-o", os.path.join(d, "t")],
                           capture_output=True)
        return r.returncode == 0


# Threads come from the kernels' own pool (csrc/thread_pool.h), not OpenMP: a libgomp
# dependency binds to whichever copy the process loaded first (PyTorch's, started before
# tensorlite could configure it, whose idle threads spin). -fopenmp-simd keeps the
# `#pragma omp simd` loop hints and links no runtime; without it they are ignored (slower,
# still correct).
# -fno-trapping-math -fno-thread-jumps: tl::exp_poly clamps its input, and GCC threads the
# clamped path (its result is a constant) into a branch holding the rest of the loop body;
# without AVX-512's masked instructions it then cannot if-convert that branch back (the
# floating-point ops in it "could trap"), so every exp-based loop of the AVX2 and baseline
# variants stayed scalar: softmax, cross-entropy and GELU 3-10x slower than they vectorise.
# The kernels never read floating-point exception flags. Both flags together: the first
# alone lets GCC vectorise the threaded copies, with a second division, 6x slower.
compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-thread-jumps"]
link_args = []
if sys.platform != "win32":
    compile_args.append("-pthread")
    link_args.append("-pthread")
    link_args.append("-ldl")  # csrc/gemm.cpp opens the BLAS at run time (dlopen)
    if _compiler_accepts("-fopenmp-simd"):
        compile_args.append("-fopenmp-simd")
if os.environ.get("TENSORLITE_NATIVE") == "1":
    compile_args.append("-march=native")
if os.environ.get("TL_NO_CLONES") == "1":
    # one variant per kernel, for the compiler's own flags (tests the baseline/AVX2 paths)
    compile_args.append("-DTL_NO_CLONES")

ext = Pybind11Extension(
    "tensorlite._C",
    sorted(glob.glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(
    packages=[
        "tensorlite", "tensorlite.backend", "tensorlite.reference", "tensorlite.autograd",
        "tensorlite.ops", "tensorlite.nn", "tensorlite.optim", "tensorlite.models",
        "tensorlite.tokenizers", "tensorlite.data", "tensorlite.kernels",
    ],
    package_dir={"tensorlite": "tensorlite", "tensorlite.kernels": "kernels"},
    ext_modules=[ext],
    cmdclass={"build_ext": build_ext},
)
