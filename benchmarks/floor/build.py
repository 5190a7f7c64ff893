"""Build benchmarks/floor/c_floor.cpp into a shared library against the
installed torch (once per torch version) and return its path."""

import os
import subprocess

import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))


def build():
    out_dir = os.path.join(HERE, "build", torch.__version__)
    target = os.path.join(out_dir, "c_floor.so")
    source = os.path.join(HERE, "c_floor.cpp")
    if os.path.exists(target) and os.path.getmtime(target) > os.path.getmtime(source):
        return target
    os.makedirs(out_dir, exist_ok=True)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command = ["g++", "-O2", "-shared", "-fPIC", "-std=c++20",
               f"-D_GLIBCXX_USE_CXX11_ABI={abi}", source, "-o", target]
    command += [f"-I{p}" for p in cpp_extension.include_paths()]
    for lib_dir in cpp_extension.library_paths():
        command += [f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}"]
    command += ["-lc10", "-ltorch_cpu", "-ltorch"]
    subprocess.run(command, check=True)
    return target


NOGIL_SETUP = """
from setuptools import setup
from Cython.Build import cythonize
import aoti_cy
setup(ext_modules=cythonize("nogil_loop.pyx", include_path=[aoti_cy.get_include()],
                            compiler_directives={"language_level": 3}))
"""


def build_nogil_loop():
    """Build nogil_loop.pyx against the installed aoti_cy; return the module."""
    import importlib
    import shutil
    import sys
    out_dir = os.path.join(HERE, "build", torch.__version__, "nogil")
    os.makedirs(out_dir, exist_ok=True)
    source = os.path.join(HERE, "nogil_loop.pyx")
    built = [f for f in os.listdir(out_dir) if f.startswith("nogil_loop.") and f.endswith(".so")]
    # Rebuilt whenever aoti_cy's declarations or build change: the loop binds
    # its C API by signature.
    import glob
    import aoti_cy
    package = os.path.dirname(aoti_cy.__file__)
    inputs = [source] + glob.glob(os.path.join(package, "**", "*.pxd"), recursive=True) \
        + glob.glob(os.path.join(package, "*.so"))
    newest = max(os.path.getmtime(f) for f in inputs)
    if not built or os.path.getmtime(os.path.join(out_dir, built[0])) < newest:
        shutil.copy(source, out_dir)
        with open(os.path.join(out_dir, "setup.py"), "w") as f:
            f.write(NOGIL_SETUP)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
                       cwd=out_dir, check=True, capture_output=True)
    sys.path.insert(0, out_dir)
    try:
        return importlib.import_module("nogil_loop")
    finally:
        sys.path.remove(out_dir)
