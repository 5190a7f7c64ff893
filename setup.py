"""Build aoti_cy against the torch installed in this environment.

Like every torch C++ extension, the result runs only with the torch it was
built against; that version is written into aoti_cy/_build_info.py and
checked at import. Install torch first, then build without isolation:

    pip install --no-build-isolation -e .
"""

import os
import sys

from setuptools import Extension, setup

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    sys.exit("aoti_cy builds against the installed torch: install torch first "
             "(e.g. pip install torch==2.13.0), then run "
             "pip install --no-build-isolation .")
from Cython.Build import cythonize

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")

# Set once, here, for every module.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
}


def write_build_info():
    path = os.path.join(HERE, "aoti_cy", "_build_info.py")
    text = ("# Written by setup.py: the torch this build of aoti_cy is for.\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n")
    with open(path, "w") as f:
        f.write(text)


write_build_info()

extensions = [
    # dlopen/dlsym and the function table: no torch headers needed.
    Extension("aoti_cy._library", ["aoti_cy/_library.pyx"], language="c++",
              include_dirs=[CSRC]),
    # Where a model runs: device codes, streams, the device guard (libtorch's
    # CUDA shim through dlsym: no torch headers needed).
    Extension("aoti_cy._device", ["aoti_cy/_device.pyx"], language="c++",
              include_dirs=[CSRC]),
    # The tensor bridge, compiled here only: every other extension cimports it.
    CppExtension("aoti_cy._tensor_bridge",
                 ["aoti_cy/_tensor_bridge.pyx", "csrc/tensor_bridge.cpp"],
                 include_dirs=[CSRC]),
    # The base of every model object: the gate and the one run path.
    CppExtension("aoti_cy._handle_owner", ["aoti_cy/_handle_owner.pyx"],
                 include_dirs=[CSRC]),
    # ModelContainer and load().
    CppExtension("aoti_cy.interface", ["aoti_cy/interface.pyx"], include_dirs=[CSRC]),
    # The single-instance Model, on the same run path.
    CppExtension("aoti_cy._model", ["aoti_cy/_model.pyx"], include_dirs=[CSRC]),
    # The public C API for Cython consumers (capi.pxd).
    CppExtension("aoti_cy.capi", ["aoti_cy/capi.pyx"],
                 include_dirs=[CSRC]),
    # The checks every call makes: the shape contract and the model's own
    # per-input checks.
    CppExtension("aoti_cy._call_checks",
                 ["aoti_cy/_call_checks.pyx", "csrc/input_guards.cpp",
                  "csrc/shape_contract.cpp"],
                 include_dirs=[CSRC]),
    # The constant entry points of each torch release.
    CppExtension("aoti_cy._constant_calls",
                 ["aoti_cy/_constant_calls.pyx"],
                 include_dirs=[CSRC]),
    # The proxy executor for models with fallback ops: compiled against torch.
    CppExtension("aoti_cy._proxy_executor",
                 ["aoti_cy/_proxy_executor.pyx", "csrc/proxy_executor.cpp"],
                 include_dirs=[CSRC]),
    # The graphed call path of CUDA graphs: the CUDA runtime is found at run time.
    CppExtension("aoti_cy._graph_calls",
                 ["aoti_cy/_graph_calls.pyx", "csrc/graph_calls.cpp"],
                 include_dirs=[CSRC], libraries=["dl"]),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
)
