"""aoti_cy: run PyTorch AOTInductor artifacts through the model's own C ABI.

    import aoti_cy
    model = aoti_cy.load("model.pt2")
    outputs = model.run([x, y])
"""

import torch as _torch

try:
    from aoti_cy._build_info import TORCH_VERSION as BUILT_FOR_TORCH
except ImportError:  # pragma: no cover - a source tree that was never built
    raise ImportError(
        "aoti_cy is not built: run `pip install --no-build-isolation -e .` "
        "in the aoti_cy source tree") from None

if _torch.__version__ != BUILT_FOR_TORCH:
    raise ImportError(
        f"aoti_cy was built for torch {BUILT_FOR_TORCH} but torch "
        f"{_torch.__version__} is installed; its C++ extension only works "
        f"with the torch it was built against. Rebuild it: "
        f"`pip install --no-build-isolation --force-reinstall --no-deps .` "
        f"(or `-e .`) in the aoti_cy source tree")

from aoti_cy.errors import (AOTIError, ArgumentRuntimeError, MissingSymbolError,
                            ModelNotFoundError, PackageError, PackageNotFoundRuntimeError,
                            PackageRuntimeError)
from aoti_cy.interface import ConstantInfo, Model, ModelContainer, load
from aoti_cy.torch_compat import (AOTICompiledModel, aoti_load_package, load_package,
                                  patch_torch)

__version__ = "0.1.0"
__all__ = ["AOTIError", "ConstantInfo", "MissingSymbolError", "Model",
           "ModelContainer", "PackageError",
           "load", "get_include", "BUILT_FOR_TORCH",
           "AOTICompiledModel", "aoti_load_package", "load_package", "patch_torch",
           "ArgumentRuntimeError", "ModelNotFoundError", "PackageNotFoundRuntimeError",
           "PackageRuntimeError"]


def get_include():
    """The folder to put on a Cython consumer's include path.

    Returns
    -------
    str
        The folder that holds the ``aoti_cy`` package, so that
        ``cimport aoti_cy`` and ``from aoti_cy.interface cimport ...`` work.
    """
    import os
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
