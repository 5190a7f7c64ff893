"""patch_torch(): torch's loader names pointed at aoti_cy, process-wide.

The replacements are :mod:`aoti_cy.torch_compat`'s classes and functions
(with the patch's ``check_inputs`` default); :class:`TorchPatch` sets and
restores the names. Public through :mod:`aoti_cy.torch_compat`.
"""

import functools
import importlib
import threading

from aoti_cy import torch_compat
from aoti_cy._torch_runner import (AOTIModelContainerRunnerCpu, AOTIModelContainerRunnerCuda,
                                   aot_load)
from aoti_cy.torch_compat import AOTICompiledModel, AOTIModelPackageLoader, _load

__all__ = ["TorchPatch", "patch_torch", "patched_names"]

# Classes made here present themselves as torch_compat's.
_PUBLIC_MODULE = "aoti_cy.torch_compat"


@functools.cache
def _torch_typed_model_class():
    """AOTICompiledModel that is also an instance of torch's class, for code
    reached through torch's names that checks ``isinstance``. Made on first
    patch: importing torch's class imports inductor (seconds)."""
    from torch.export.pt2_archive._package import AOTICompiledModel as TorchCompiledModel
    return type("AOTICompiledModel", (AOTICompiledModel, TorchCompiledModel),
                {"__module__": _PUBLIC_MODULE, "__doc__": AOTICompiledModel.__doc__})


def _with_check_inputs(cls, check_inputs):
    """``cls`` whose ``check_inputs`` default is the patch's."""
    return type(cls.__name__, (cls,), {"__module__": _PUBLIC_MODULE, "__doc__": cls.__doc__,
                                       "_patch_check_inputs": check_inputs})


def _replacements(check_inputs):
    """(module, attribute, replacement) for every name through which code
    reaches torch's loaders, the replacements loading with ``check_inputs``."""
    model_class = _torch_typed_model_class()
    loader_class = _with_check_inputs(AOTIModelPackageLoader, check_inputs)

    def load_package(path, model_name="model", run_single_threaded=False, num_runners=1,
                     device_index=-1):
        return _load(path, model_name, run_single_threaded, num_runners, device_index,
                     None, loader_class, model_class)

    def aoti_load_package(path, run_single_threaded=False, device_index=-1):
        return _load(path, "model", run_single_threaded, 1, device_index, None,
                     loader_class, model_class)

    def load_aoti(file, model_name, run_single_threaded, num_runners, device_idx):
        # What torch.export.pt2_archive._package.load_pt2 builds each model with.
        return _load(file, model_name, run_single_threaded, num_runners, device_idx, None,
                     loader_class, model_class)

    def aot_load_(so_path, device):
        return aot_load(so_path, device, check_inputs=check_inputs)

    load_package.__doc__ = torch_compat.load_package.__doc__
    aoti_load_package.__doc__ = torch_compat.aoti_load_package.__doc__
    aot_load_.__doc__ = aot_load.__doc__
    aot_load_.__name__ = aot_load_.__qualname__ = "aot_load"
    return (
        ("torch._inductor", "aoti_load_package", aoti_load_package),
        ("torch._inductor.package", "load_package", load_package),
        ("torch._inductor.package.package", "load_package", load_package),
        ("torch.export.pt2_archive._package", "_load_aoti", load_aoti),
        ("torch._export", "aot_load", aot_load_),
        ("torch._C._aoti", "AOTIModelPackageLoader", loader_class),
        ("torch._C._aoti", "AOTIModelContainerRunnerCpu",
         _with_check_inputs(AOTIModelContainerRunnerCpu, check_inputs)),
        ("torch._C._aoti", "AOTIModelContainerRunnerCuda",
         _with_check_inputs(AOTIModelContainerRunnerCuda, check_inputs)),
    )


_MISSING = object()
_patch_lock = threading.Lock()
_active_patches = []


class TorchPatch:
    """torch's loader names pointed at aoti_cy, process-wide, until
    :meth:`undo` (or the end of a ``with`` block) puts back exactly what was
    there. Patches undo in the reverse order they were applied. Made by
    :func:`patch_torch`.

    Parameters
    ----------
    check_inputs : bool or None
        What loads through the patched names use (None:
        ``AOTI_CY_CHECK_INPUTS`` at each load).

    Attributes
    ----------
    patched : tuple of str
        The names replaced ("module.attribute"), once applied.
    absent : tuple of str
        Names left alone because this torch has none (the CUDA runner in a
        CPU-only build).
    check_inputs : bool or None
        As given.

    Raises
    ------
    TypeError
        ``check_inputs`` is neither a bool nor None.
    """

    def __init__(self, check_inputs=None):
        if check_inputs is not None and not isinstance(check_inputs, (bool, int)):
            raise TypeError(f"check_inputs must be a bool or None, got "
                            f"{type(check_inputs).__name__}")
        self.check_inputs = None if check_inputs is None else bool(check_inputs)
        self.patched = ()
        self.absent = ()
        self._saved = None

    @property
    def active(self):
        """bool: whether this patch is applied and not yet undone."""
        return self._saved is not None

    def apply(self):
        """Point torch's names at aoti_cy, saving what was there.

        Returns
        -------
        TorchPatch
            This patch, so that ``TorchPatch().apply()`` can be used in a
            ``with`` statement.

        Raises
        ------
        RuntimeError
            This patch is applied already.
        """
        with _patch_lock:
            if self._saved is not None:
                raise RuntimeError("this TorchPatch is applied already")
            saved, absent = [], []
            for module_name, attribute, replacement in _replacements(self.check_inputs):
                module = importlib.import_module(module_name)
                original = module.__dict__.get(attribute, _MISSING)
                if original is _MISSING and module_name == "torch._C._aoti":
                    # a runner torch was built without (CUDA on a CPU build)
                    absent.append(f"{module_name}.{attribute}")
                    continue
                saved.append((module, attribute, original, replacement))
            for module, attribute, _, replacement in saved:
                setattr(module, attribute, replacement)
            self._saved = saved
            self.patched = tuple(f"{module.__name__}.{attribute}"
                                 for module, attribute, _, _ in saved)
            self.absent = tuple(absent)
            _active_patches.append(self)
        return self

    def undo(self):
        """Put torch's names back as they were before :meth:`apply`: each is
        the very object that was there. Undoing a patch not applied (or
        undone already) does nothing.

        Raises
        ------
        RuntimeError
            A patch applied after this one is still active: patches undo in
            the reverse order.
        """
        with _patch_lock:
            if self._saved is None:
                return
            if _active_patches[-1] is not self:
                raise RuntimeError("undo aoti_cy's torch patches in the reverse order they "
                                   "were applied: a later patch is still active")
            for module, attribute, original, _ in reversed(self._saved):
                if original is _MISSING:
                    module.__dict__.pop(attribute, None)
                else:
                    setattr(module, attribute, original)
            self._saved = None
            _active_patches.pop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.undo()

    def __repr__(self):
        state = "active" if self.active else "inactive"
        return f"<aoti_cy TorchPatch, {state}, check_inputs={self.check_inputs}>"


def patched_names():
    """The torch names aoti_cy's patches replace now ("module.attribute"),
    () when no patch is active."""
    with _patch_lock:
        return _active_patches[-1].patched if _active_patches else ()


def patch_torch(check_inputs=None):
    """Point torch's loaders at aoti_cy, process-wide: the names listed in
    the returned :class:`TorchPatch`'s ``patched`` (``aoti_load_package``,
    ``load_package``, ``torch.export``'s `.pt2` loader, ``torch._export.aot_load``,
    and the classes ``torch._C._aoti.AOTIModelPackageLoader``,
    ``AOTIModelContainerRunnerCpu`` and, in a CUDA build,
    ``AOTIModelContainerRunnerCuda``). ``patch.undo()``, or a ``with`` block
    (``with aoti_cy.patch_torch(): ...``), puts torch's back.

    Functions imported before the patch (``from torch._inductor import
    aoti_load_package``) reach aoti_cy too: torch's functions look up the
    patched names when called. Classes imported before the patch (``from
    torch._C._aoti import AOTIModelPackageLoader``) and models loaded before
    it stay torch's.

    Parameters
    ----------
    check_inputs : bool or None
        What models loaded through the patched names use: None (default)
        means ``AOTI_CY_CHECK_INPUTS`` at each load (default on); False runs
        inputs unchecked, as torch does.

    Returns
    -------
    TorchPatch
        The applied patch: ``patched`` lists the names it replaced.

    Raises
    ------
    TypeError
        ``check_inputs`` is neither a bool nor None.
    """
    return TorchPatch(check_inputs).apply()
