"""Model: one AOTInductor model instance (``AOTInductorModel*``).

The single-instance half of the C ABI: no container, pool or constant
buffers. It shares the run path, gate and checks of ``_handle_owner``
and the library's description (the single-instance ABI cannot name inputs,
outputs or constants; ``_description`` reads them once per library).
"""

cimport cython
from cpython.pythread cimport (
    PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_release_lock, PyThread_type_lock, WAIT_LOCK)

import torch

from aoti_cy.includes.abi cimport AOTIRuntimeError, AOTInductorModelHandle, AtenTensorHandle
from aoti_cy.includes.run_gate cimport aoti_cy_gate_set_closed
from aoti_cy._constant_calls cimport update_model_constants
from aoti_cy._device cimport AOTI_CY_DEVICE_CPU
from aoti_cy._library cimport ModelLibrary
from aoti_cy._handle_owner cimport _HandleOwner

from aoti_cy import _package
from aoti_cy._constants import ConstantsState
from aoti_cy._description import description_for
from aoti_cy._library import open_library
from aoti_cy._proxy_executor import executor_for
from aoti_cy.errors import PackageError

__all__ = ["Model"]


@cython.no_gc_clear
cdef class Model(_HandleOwner):
    """One AOTInductor model instance (``AOTInductorModel*``), without the
    container's pool, locking or constant buffers: the C ABI's bare-metal
    path, for CPU models.

    ``Model(path, constants=None, *, model_name="model", check_inputs=True,
    allow_executable_stack=False)`` takes what :func:`load` takes (a `.pt2`,
    an extracted package directory or a model `.so`) and uses the package's
    weights, or ``constants`` (original FQN or internal name -> CPU tensor,
    every constant) instead. A package without weights refuses to run until
    :meth:`update_constants_map` gives them. Runs are serialised: one
    instance runs one call at a time (use a container for concurrency).
    ``model(*args, **kwargs)`` calls it as the exported module was called.
    ``check_inputs`` and ``allow_executable_stack`` are as for
    :class:`ModelContainer`.
    """

    cdef PyThread_type_lock _lock   # one run or update at a time

    def __cinit__(self, *args, **kwargs):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()

    def __init__(self, path, constants=None, *, model_name="model", check_inputs=True,
                 allow_executable_stack=False):
        cdef AOTInductorModelHandle handle = NULL
        cdef AOTIRuntimeError status
        cdef ModelLibrary lib
        if self.library is not None:
            raise RuntimeError("Model.__init__ called twice")
        artifact = _package.open_artifact(path, model_name,
                                          allow_executable_stack=allow_executable_stack)
        try:
            if executor_for(artifact.library_path, "cpu") is not None:
                raise PackageError(
                    f"{path} calls fallback ops through a proxy executor, which the "
                    f"single-instance AOTInductorModelRun cannot take: load it with "
                    f"aoti_cy.load() instead")
            self.library = lib = open_library(artifact.library_path,
                                              allow_executable_stack=allow_executable_stack)
            self._device, self._device_type, self._device_index = (
                torch.device("cpu"), AOTI_CY_DEVICE_CPU, -1)
            description = description_for(lib, "cpu", artifact.cubin_dir)
            self._weights = ConstantsState(description, self._device,
                                           "with update_constants_map()")
            values = _initial_values(lib, self._weights, artifact, constants)
        except BaseException:
            artifact.cleanup()
            raise
        self._package = artifact
        self.describe(description, self._device, bool(check_inputs))
        # Created from the embedded constants, then given the user's: models
        # created straight from a constant map (CreateV2 with pairs) have no
        # constants array and fail at their first run (torch 2.13).
        if lib.fn.model_create_v2 != NULL:
            with nogil:
                status = lib.fn.model_create_v2(&handle, NULL, 0)
            lib.check(status, "AOTInductorModelCreateV2")
        else:
            with nogil:
                status = lib.fn.model_create(&handle, NULL)
            lib.check(status, "AOTInductorModelCreate")
        self.own_handle(handle, <void*>lib.fn.model_delete, "AOTInductorModelDelete")
        aoti_cy_gate_set_closed(&self._closed, 0)
        if values:
            self.update_constants_map(values)
        else:
            self.note_constants_present(description.embedded_constants())

    def __dealloc__(self):
        # The base's __dealloc__ deletes the handle after this: it takes no lock.
        if self._lock != NULL:
            PyThread_free_lock(self._lock)
            self._lock = NULL

    def run(self, inputs):
        """Run on a list (or tuple) of CPU tensors; return a list of tensors."""
        return self.run_tensors(inputs, None, False, False)

    cdef AOTIRuntimeError call_entry(self, AtenTensorHandle* inputs,
                                     AtenTensorHandle* outputs, void* stream,
                                     bint single_threaded) noexcept nogil:
        cdef AOTIRuntimeError status
        PyThread_acquire_lock(self._lock, WAIT_LOCK)   # one instance, one run at a time
        status = self.library.fn.model_run(<AOTInductorModelHandle>self._handle, inputs, outputs)
        PyThread_release_lock(self._lock)
        return status

    cdef const char* entry_name(self, bint single_threaded) noexcept nogil:
        return "AOTInductorModelRun"

    def update_constants_map(self, mapping):
        """Replace the model's constants (original FQN or internal name ->
        CPU tensor, every constant). Not concurrent with :meth:`run`."""
        self.check_open()
        # The model keeps these tensors as they are (no copy into slots).
        values = self._weights.table().checked_update(mapping, full_update=True,
                                                      uncopied=True)
        self.enter()   # close() on another thread waits for the gate
        try:
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)
            try:
                update_model_constants(self.library, <AOTInductorModelHandle>self._handle, values)
            finally:
                PyThread_release_lock(self._lock)
            self.note_constants_present([c.name for c in self._weights.constants])
        finally:
            self.leave()


def _initial_values(ModelLibrary library, weights, artifact, constants):
    """The constants to give a new Model: the caller's (checked), else the
    package's when it stores them outside the `.so` (None: the model uses
    what the `.so` holds)."""
    package_values = None
    if artifact.stores_weights_outside_library and (
            constants is None or weights.description.shapes is None):
        # Only a container turns a package's weights into tensors (the blob's
        # layout is the runtime's); it also learns the constants' shapes.
        from aoti_cy.interface import ModelContainer, load_package_weights
        with ModelContainer(library.path, device="cpu", check_inputs=False,
                            allow_executable_stack=library.executable_stack) as container:
            load_package_weights(container, artifact)
            package_values = container.extract_constants_map()
    if constants is not None:
        return weights.table().checked_update(constants, full_update=True)
    if package_values is None or weights.table().unset(
            {weights.fqn_to_name()[fqn]: t for fqn, t in package_values.items()}):
        return None   # the .so's own weights, or a package without weights
    return package_values
