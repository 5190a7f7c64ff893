"""A drop-in for torch's AOTInductor loaders, run by aoti_cy.

``aoti_load_package`` and ``load_package`` take what
``torch._inductor.aoti_load_package`` and ``torch._inductor.package.load_package``
take and return an :class:`AOTICompiledModel` whose ``loader`` has the methods
of ``torch._C._aoti.AOTIModelPackageLoader``; :class:`AOTIModelPackageLoader`,
:class:`AOTIModelContainerRunnerCpu`, :class:`AOTIModelContainerRunnerCuda`
and :func:`aot_load` are torch's classes and ``torch._export.aot_load``. Every
call is backed by an aoti_cy :class:`~aoti_cy.ModelContainer`.
:func:`patch_torch` makes torch's own names load with these, for code that
cannot be edited; :func:`containers_built` counts the containers they built.

What differs on purpose: inputs are checked before every run (a wrong shape,
dtype, stride or device is an exception naming the input, not wrong numbers
or a crash; ``check_inputs=False`` or ``AOTI_CY_CHECK_INPUTS=0`` turns that
off), bad constants are refused before anything changes. Where torch raises
``RuntimeError``, the exceptions here are ``RuntimeError`` subclasses too (see
``aoti_cy.errors``) whose message starts with torch's message for the same
situation, then says more.
"""

import logging
import os
import shutil
import tempfile

import numpy as np
import torch

from aoti_cy import _package
from aoti_cy._call import CallSpec
from aoti_cy._device import stream_address
from aoti_cy._torch_common import (CHECK_INPUTS_ENV, as_runtime_error, containers_built,
                                   count_container, cuda_unavailable, resolve_check_inputs,
                                   update_constant_buffer)
from aoti_cy._torch_runner import (AOTIModelContainerRunnerCpu, AOTIModelContainerRunnerCuda,
                                   _count_message, aot_load)
from aoti_cy.errors import (ArgumentRuntimeError, MissingSymbolError, ModelNotFoundError,
                            PackageError, PackageNotFoundRuntimeError, PackageRuntimeError)
from aoti_cy.interface import load

__all__ = ["AOTICompiledModel", "AOTIModelContainerRunnerCpu", "AOTIModelContainerRunnerCuda",
           "AOTIModelPackageLoader", "CHECK_INPUTS_ENV", "TorchPatch", "aot_load",
           "aoti_load_package", "containers_built", "load_package", "patch_torch",
           "patched_names"]

logger = logging.getLogger(__name__)


class AOTIModelPackageLoader:
    """``torch._C._aoti.AOTIModelPackageLoader``'s interface over an aoti_cy
    container.

    ``container`` is the aoti_cy :class:`~aoti_cy.ModelContainer` behind it,
    for what torch's loader does not offer (``load_weights``, ``close``, ...).

    Parameters
    ----------
    model_package_path : str or os.PathLike
        A ``.pt2`` package (also an extracted package folder or a model
        ``.so``).
    model_name : str
        Which model of the package to load.
    run_single_threaded : bool
        Run without the container's locking (one thread at a time, as CUDA
        graphs need); needs ``num_runners=1``.
    num_runners : int
        How many model instances may run at once (at least 1).
    device_index : int
        The GPU of a CUDA model; -1 (or 0) for the current one.
    check_inputs : bool or None
        Check every run's inputs; None means ``AOTI_CY_CHECK_INPUTS``
        (default on).
    allow_executable_stack : bool
        Load a library that asks for an executable stack as it is (see
        :func:`aoti_cy.load`).

    Raises
    ------
    TypeError
        ``num_runners`` or ``device_index`` is not an int.
    aoti_cy.errors.ArgumentRuntimeError
        ``num_runners`` is below 1, or above 1 with ``run_single_threaded``,
        or ``device_index`` does not fit the model's device.
    aoti_cy.errors.PackageNotFoundRuntimeError
        No file at ``model_package_path``.
    aoti_cy.errors.ModelNotFoundError
        The package holds no model named ``model_name``.
    aoti_cy.errors.PackageRuntimeError
        The package cannot be loaded (corrupt, unsafe, not a model).
    aoti_cy.errors.MissingSymbolError
        ``run_single_threaded`` and the model lacks that entry point.
    """

    # A patch sets this on the class it installs (None: AOTI_CY_CHECK_INPUTS).
    _patch_check_inputs = None

    def __init__(self, model_package_path, model_name="model", run_single_threaded=False,
                 num_runners=1, device_index=-1, *, check_inputs=None,
                 allow_executable_stack=False):
        if not isinstance(num_runners, int) or isinstance(num_runners, bool):
            raise TypeError(f"num_runners must be an int, got {type(num_runners).__name__}")
        if not isinstance(device_index, int) or isinstance(device_index, bool):
            raise TypeError(f"device_index must be an int, got {type(device_index).__name__}")
        if run_single_threaded and num_runners != 1:
            raise ArgumentRuntimeError(
                f"num_runners must be 1 when run_single_threaded is true, got {num_runners}")
        if num_runners < 1:
            raise ArgumentRuntimeError(
                f"num_runners must be >=1 when run_single_threaded is false, got {num_runners}")
        if check_inputs is None:
            check_inputs = self._patch_check_inputs
        model_package_path = os.fspath(model_package_path)
        index = _check_package_file(model_package_path)
        try:
            self._container = count_container(load(
                model_package_path,
                device=_device(model_package_path, model_name, device_index, index),
                num_models=num_runners, model_name=model_name,
                check_inputs=resolve_check_inputs(check_inputs),
                allow_executable_stack=allow_executable_stack))
        except (ValueError, FileNotFoundError) as e:
            raise as_runtime_error(e) from None
        self._single_threaded = bool(run_single_threaded)
        self._spec = None
        if self._single_threaded:
            name = "AOTInductorModelContainerRunSingleThreaded"
            if not self._container.library.exported().get(name):
                self._container.close()
                raise MissingSymbolError(name, model_package_path)

    @property
    def container(self):
        """The aoti_cy ModelContainer behind this loader."""
        return self._container

    def __repr__(self):
        mode = ", single-threaded" if self._single_threaded else ""
        return f"<aoti_cy AOTIModelPackageLoader over {self._container!r}{mode}>"

    # ---- running ------------------------------------------------------------

    def run(self, inputs, stream_handle=None):
        """Run the model on a flat list of its inputs.

        Parameters
        ----------
        inputs : sequence of torch.Tensor
            One tensor (or numpy array) per model input, in order.
        stream_handle : int, torch.cuda.Stream, PyCapsule or None
            The CUDA stream to run on (None: the current one).

        Returns
        -------
        list of torch.Tensor
            The model's outputs, flat.

        Raises
        ------
        aoti_cy.errors.ArgumentRuntimeError
            The inputs do not fit the model (count, dtype, shape, stride,
            device); the message starts with torch's.
        """
        container = self._container
        try:
            stream = stream_address(stream_handle, container.device, "stream_handle")
            if self._single_threaded:
                return container.run_single_threaded(inputs, stream)
            return container.run(inputs, stream)
        except ValueError as e:
            raise as_runtime_error(e, _count_message(container, inputs)) from None

    def boxed_run(self, inputs, stream_handle=None):
        """Like :meth:`run`, for a list the call takes over: it is emptied
        (as torch's does, so the caller holds no references to the inputs).

        Parameters
        ----------
        inputs : list of torch.Tensor
            One tensor (or numpy array) per model input; emptied.
        stream_handle : int, torch.cuda.Stream, PyCapsule or None
            The CUDA stream to run on (None: the current one).

        Returns
        -------
        list of torch.Tensor
            The model's outputs, flat.

        Raises
        ------
        TypeError
            ``inputs`` is not a list of tensors (the list is left as it was).
        aoti_cy.errors.ArgumentRuntimeError
            The inputs do not fit the model.
        """
        if not isinstance(inputs, list):
            raise TypeError(f"boxed_run takes a list of tensors, got {type(inputs).__name__}")
        for i, item in enumerate(inputs):
            if not isinstance(item, (torch.Tensor, np.ndarray)):
                raise TypeError(f"boxed_run: input {i} is {type(item).__name__}, not a tensor")
        tensors = tuple(inputs)
        inputs.clear()
        return self.run(tensors, stream_handle)

    def _call_model(self, args, kwargs):
        """``model(*args, **kwargs)`` as the exported module was called."""
        try:
            if not self._single_threaded:
                return self._container(*args, **kwargs)
            if self._spec is None:
                self._spec = CallSpec(*self._container.call_spec, self._container.num_inputs)
            flat = self._spec.flatten(args, kwargs)
            return self._spec.unflatten(self._container.run_single_threaded(flat))
        except ValueError as e:
            raise as_runtime_error(e) from None

    # ---- description --------------------------------------------------------

    def get_call_spec(self):
        """The serialized pytree specs of the exported call.

        Returns
        -------
        list of str
            ``[in_spec, out_spec]``, as JSON strings.
        """
        return list(self._container.call_spec)

    def get_metadata(self):
        """The package's metadata for this model.

        Returns
        -------
        dict of str to str
            ``AOTI_DEVICE_KEY`` and the other entries the package records
            (``{}`` for a bare ``.so``).
        """
        return dict(self._container.metadata)

    def get_constant_fqns(self):
        """The original FQNs of the model's constants.

        Returns
        -------
        list of str
            One fully qualified name (``"fc1.weight"``) per constant.
        """
        return list(self._container.constant_fqns)

    def get_custom_objs(self):
        """The model's torchbind objects.

        Returns
        -------
        dict
            Always ``{}``: aoti_cy refuses models with torchbind objects at
            load.
        """
        return {}

    @staticmethod
    def load_metadata_from_package(model_package_path, model_name):
        """A model's metadata, read from the package without loading it.

        Parameters
        ----------
        model_package_path : str or os.PathLike
            The ``.pt2`` package.
        model_name : str
            Which model of the package.

        Returns
        -------
        dict of str to str
            The model's metadata, as :meth:`get_metadata` gives it.

        Raises
        ------
        aoti_cy.errors.PackageNotFoundRuntimeError
            No file at ``model_package_path``.
        aoti_cy.errors.ModelNotFoundError
            The package has no metadata for ``model_name``.
        aoti_cy.errors.PackageRuntimeError
            The file is not a readable package.
        """
        return _metadata_in_package(model_package_path, model_name)

    # ---- constants ----------------------------------------------------------

    def load_constants(self, constants_map, use_inactive, check_full_update,
                       user_managed=False, allow_h2d_copy=False):
        """Set constants by original FQN (see :meth:`get_constant_fqns`).

        Parameters
        ----------
        constants_map : dict of str to torch.Tensor
            FQN to the new value.
        use_inactive : bool
            Write the inactive buffer (then :meth:`swap_constant_buffer`)
            instead of the active one.
        check_full_update : bool
            Demand a value for every constant.
        user_managed : bool
            Use the given tensors in place instead of copying them (keep
            them alive while the model may run).
        allow_h2d_copy : bool
            Copy CPU tensors to a GPU model; not with ``user_managed``.

        Raises
        ------
        aoti_cy.errors.ArgumentRuntimeError
            An unknown FQN, CPU tensors for a GPU model without
            ``allow_h2d_copy``, ``allow_h2d_copy`` with ``user_managed``, or
            a value that does not fit its constant; nothing is changed.
        """
        fqns = self._container.constant_fqns
        unknown = sorted(str(k) for k in constants_map if k not in fqns)
        if unknown:
            raise ArgumentRuntimeError(
                f"Constant not found: {', '.join(unknown)}; the model's constants are "
                f"{sorted(fqns)}")
        if allow_h2d_copy and user_managed:
            raise ArgumentRuntimeError(
                "load_constants: allow_h2d_copy is not supported with user_managed "
                "(user-managed constants are used in place, not copied)")
        device = self._container.device
        if device.type != "cpu" and not allow_h2d_copy:
            on_cpu = sorted(k for k, t in constants_map.items()
                            if isinstance(t, torch.Tensor) and t.device.type == "cpu")
            if on_cpu:
                raise ArgumentRuntimeError(
                    f"load_constants: {on_cpu} are on cpu but the model runs on {device}; "
                    f"pass allow_h2d_copy=True to copy them over")
        self.update_constant_buffer(constants_map, use_inactive, check_full_update,
                                    user_managed)

    def update_constant_buffer(self, tensor_map, use_inactive, validate_full_updates,
                               user_managed=False):
        """Set constants by internal name (or FQN), as
        :meth:`aoti_cy.ModelContainer.update_constant_buffer` does.

        Parameters
        ----------
        tensor_map : dict of str to torch.Tensor
            Constant name (or FQN) to the new value.
        use_inactive : bool
            Write the inactive buffer instead of the active one.
        validate_full_updates : bool
            Demand a value for every constant.
        user_managed : bool
            Use the given tensors in place instead of copying them.

        Raises
        ------
        aoti_cy.errors.ArgumentRuntimeError
            An unknown name, or a value that does not fit (dtype, shape,
            device); nothing is changed.
        """
        update_constant_buffer(self._container, tensor_map, use_inactive,
                               validate_full_updates, user_managed)

    def extract_constants_map(self, use_inactive=False):
        """Copies of the model's constants.

        Parameters
        ----------
        use_inactive : bool
            Read the inactive buffer instead of the active one.

        Returns
        -------
        dict of str to torch.Tensor
            FQN to a copy of each constant that is not folded.
        """
        return self._container.extract_constants_map(use_inactive=bool(use_inactive))

    def swap_constant_buffer(self):
        """Make the inactive constant buffer the active one."""
        self._container.swap_constant_buffer()

    def free_inactive_constant_buffer(self):
        """Free the inactive constant buffer."""
        self._container.free_inactive_constant_buffer()


class AOTICompiledModel:
    """torch's ``AOTICompiledModel`` run by aoti_cy: call it as the exported
    module was called; ``loader`` is an :class:`AOTIModelPackageLoader`."""

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, *args, **kwargs):
        return self.loader._call_model(args, kwargs)

    def get_metadata(self):
        """The package's metadata for this model.

        Returns
        -------
        dict of str to str
            As :meth:`AOTIModelPackageLoader.get_metadata`.
        """
        return self.loader.get_metadata()

    def load_constants(self, constants_map, *, check_full_update, user_managed=False,
                       allow_h2d_copy=False):
        """Load constants by FQN into the model (see :meth:`get_constant_fqns`).

        Parameters
        ----------
        constants_map : dict of str to torch.Tensor
            FQN to the new value.
        check_full_update : bool
            Demand a value for every constant.
        user_managed : bool
            Use the given tensors in place (keep them alive).
        allow_h2d_copy : bool
            Copy CPU tensors to a GPU model.

        Raises
        ------
        aoti_cy.errors.ArgumentRuntimeError
            As :meth:`AOTIModelPackageLoader.load_constants`; nothing is
            changed.
        """
        self.loader.load_constants(constants_map, False, check_full_update, user_managed,
                                   allow_h2d_copy)

    def get_constant_fqns(self):
        """The original FQNs of the model's constants.

        Returns
        -------
        list of str
            One fully qualified name per constant.
        """
        return self.loader.get_constant_fqns()

    def __deepcopy__(self, memo):
        # As torch's: the copy shares the loader (its container and weights).
        logger.warning("AOTICompiledModel deepcopy warning: AOTICompiledModel.loader "
                       "is not deepcopied.")
        return type(self)(self.loader)

    def __repr__(self):
        return f"<aoti_cy AOTICompiledModel, loader={self.loader!r}>"


def load_package(path, model_name="model", run_single_threaded=False, num_runners=1,
                 device_index=-1, *, check_inputs=None, allow_executable_stack=False):
    """torch's ``torch._inductor.package.load_package``, run by aoti_cy.

    Parameters
    ----------
    path : str, os.PathLike or file object
        A ``.pt2`` (a path or a readable binary file object), an extracted
        package folder or a model ``.so``.
    model_name : str
        Which model of the package to load.
    run_single_threaded, num_runners, device_index, allow_executable_stack
        As for :class:`AOTIModelPackageLoader`.
    check_inputs : bool or None
        Check every run's inputs; None means ``AOTI_CY_CHECK_INPUTS``
        (default on).

    Returns
    -------
    AOTICompiledModel
        Called as the exported module was called; ``model.loader`` is the
        :class:`AOTIModelPackageLoader`.

    Raises
    ------
    aoti_cy.errors.PackageNotFoundRuntimeError
        No file at ``path``.
    aoti_cy.errors.ModelNotFoundError
        The package holds no model of that name.
    aoti_cy.errors.PackageRuntimeError
        The package cannot be loaded (corrupt, unsafe, not a model).
    aoti_cy.errors.ArgumentRuntimeError
        ``num_runners`` or ``device_index`` does not fit, or
        ``check_inputs`` is None and ``AOTI_CY_CHECK_INPUTS`` holds a value
        that is neither a yes nor a no.
    """
    return _load(path, model_name, run_single_threaded, num_runners, device_index,
                 check_inputs, AOTIModelPackageLoader, AOTICompiledModel,
                 allow_executable_stack)


def aoti_load_package(path, run_single_threaded=False, device_index=-1, *, num_runners=1,
                      check_inputs=None, allow_executable_stack=False):
    """torch's ``torch._inductor.aoti_load_package`` (same positional
    arguments), run by aoti_cy: loads the package's model named "model"
    (:func:`load_package` picks another).

    Parameters
    ----------
    path : str, os.PathLike or file object
        A ``.pt2`` (a path or a readable binary file object), an extracted
        package folder or a model ``.so``.
    run_single_threaded, device_index, allow_executable_stack
        As for :class:`AOTIModelPackageLoader`.
    num_runners : int
        How many model instances may run at once (keyword-only: torch's
        function has no such argument).
    check_inputs : bool or None
        Check every run's inputs; None means ``AOTI_CY_CHECK_INPUTS``
        (default on).

    Returns
    -------
    AOTICompiledModel
        Called as the exported module was called.

    Raises
    ------
    aoti_cy.errors.PackageNotFoundRuntimeError
        No file at ``path``.
    aoti_cy.errors.ModelNotFoundError
        The package holds no model of that name.
    aoti_cy.errors.PackageRuntimeError
        The package cannot be loaded (corrupt, unsafe, not a model).
    aoti_cy.errors.ArgumentRuntimeError
        ``num_runners`` or ``device_index`` does not fit, or
        ``check_inputs`` is None and ``AOTI_CY_CHECK_INPUTS`` holds a value
        that is neither a yes nor a no.
    """
    return _load(path, "model", run_single_threaded, num_runners, device_index,
                 check_inputs, AOTIModelPackageLoader, AOTICompiledModel,
                 allow_executable_stack)


def _load(path, model_name, run_single_threaded, num_runners, device_index, check_inputs,
          loader_class, model_class, allow_executable_stack=False):
    if hasattr(path, "read"):
        # A file object: copied to a file, which the load extracts from.
        with tempfile.NamedTemporaryFile(suffix=".pt2") as copy:
            path.seek(0)
            shutil.copyfileobj(path, copy, 1 << 20)
            copy.flush()
            path.seek(0)
            return _load(copy.name, model_name, run_single_threaded, num_runners,
                         device_index, check_inputs, loader_class, model_class,
                         allow_executable_stack)
    loader = loader_class(os.fspath(path), model_name, run_single_threaded, num_runners,
                          device_index, check_inputs=check_inputs,
                          allow_executable_stack=allow_executable_stack)
    return model_class(loader)


def _check_package_file(path):
    """torch's errors for a path that is no package (missing, or not a zip);
    the package's index otherwise (None for a `.so`)."""
    if not os.path.exists(path):
        raise PackageNotFoundRuntimeError(
            f"Failed to initialize zip archive: file open failed. There is no model "
            f"package at {path}")
    if os.path.isfile(path) and path.endswith(".so"):
        return None
    try:
        return _package.PackageIndex.read(path)
    except _package.NotAZipError as e:
        raise PackageRuntimeError(
            f"Failed to initialize zip archive: failed finding central directory. "
            f"{e}") from None
    except PackageError as e:
        raise as_runtime_error(e) from None


def _device(path, model_name, device_index, index=None):
    """The device to load on: None (the package's) for ``device_index`` -1,
    else the package's device type at that index. A package of a GPU model
    in a process without CUDA is refused as torch refuses it, and so is a
    package whose metadata names no device."""
    if index is not None:
        try:
            kind = index.device(model_name)
        except PackageError as e:
            raise as_runtime_error(e) from None
        if kind is None:
            raise PackageRuntimeError(
                f"No device information found. Model {model_name!r} of {path} names no "
                f"device: its metadata has no {_package.DEVICE_KEY}")
    elif device_index < 0:
        return None
    else:   # a .so
        artifact = _package.open_artifact(path, model_name)
        kind = artifact.device
        artifact.cleanup()
    kind = torch.device(kind).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise cuda_unavailable(kind, path)
    if device_index < 0:
        return None
    if kind == "cpu":
        if device_index != 0:
            raise ArgumentRuntimeError(
                f"Incorrect device passed to aoti_runner_cpu. device_index {device_index} "
                f"for a cpu model: a CPU device index must be -1 or zero")
        return "cpu"
    return torch.device(kind, device_index)


def _metadata_in_package(path, model_name):
    """The metadata of ``model_name`` in a `.pt2` (or extracted package), as
    torch's ``load_metadata_from_package`` gives it, with its errors."""
    path = os.fspath(path)
    index = _check_package_file(path)
    if index is None:
        raise PackageRuntimeError(
            f"Failed to initialize zip archive: failed finding central directory. {path} "
            f"is not a .pt2 package (a model library)")
    try:
        model = index.model(model_name)
    except ModelNotFoundError as error:
        raise type(error)(error.args[0].replace(
            "a generated cpp file or so file", "wrapper metadata", 1)) from None
    if model.metadata_file is None:
        raise PackageRuntimeError(
            f"Failed to find wrapper metadata for model '{model_name}' in the zip archive. "
            f"Model {model_name!r} of {path} has no metadata file")
    try:
        return index.metadata(model_name)
    except PackageError as e:
        raise as_runtime_error(e) from None


# patch_torch() and TorchPatch live in _torch_patch, which builds on the above.
from aoti_cy._torch_patch import TorchPatch, patch_torch, patched_names  # noqa: E402

for _public in (TorchPatch, patch_torch, patched_names):
    _public.__module__ = __name__
