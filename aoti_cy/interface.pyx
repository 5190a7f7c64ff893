"""ModelContainer and Model: AOTInductor models driven through their C ABI.

This module holds the public classes, the run path and the public C API
(declared in ``interface.pxd``). Where the Python API differs from the C ABI:
- input counts are checked before the C call (the C side throws across the
  ABI on a mismatch, which aborts the process);
- inputs are checked to live on the model's device before the C call, and
  by default against the model's own dtype/shape/stride checks (see
  ``check_inputs``);
- a failed call frees every handle the model did not take and raises
  AOTIError with the runtime's own message;
- the GIL is released around every call into the model;
- CUDA runs go on the current stream of the *model's* device by default.

Constants go through ``_constant_calls`` (the entry points of each torch
release) after ``_constants`` validated them; input checks live in
``_call_checks``; CUDA graphs in ``cuda_graphs``.

Why this file is over 600 lines: it holds both public classes, whose
docstrings are the API reference, and the module-level functions that reach
their handles (the run path, creation, the gate around constant calls). Those
functions read the classes' C fields, and the public C API must not expose
them, so they cannot move to another module without exporting private C
functions through interface.pxd.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS
from libc.stdint cimport uintptr_t
from libcpp cimport bool as cbool

import threading
import weakref

import numpy
import torch

from aoti_cy.includes.abi cimport (
    AOTI_RUNTIME_FAILURE, AOTI_RUNTIME_SUCCESS, AOTIProxyExecutorHandle, AOTIRuntimeError,
    AOTInductorModelContainerHandle, AOTInductorModelHandle, AOTInductorStreamHandle,
    AtenTensorHandle, ContainerActionFn, ContainerGetNameFn, ContainerGetSizeFn,
    ContainerRunFn)
from aoti_cy.includes.bridge cimport (
    AOTI_CY_DEVICE_CPU, AOTI_CY_DEVICE_CUDA, AotiCyDevice, AotiCyRunBuffers,
    aoti_cy_accept_arrays_of, aoti_cy_drop_refs, aoti_cy_free_handles,
    aoti_cy_handle_from_tensor, aoti_cy_handles_from_tensors, aoti_cy_list_from_handles,
    aoti_cy_tuple_from_handles,
    aoti_cy_new_handle_ref, aoti_cy_tensor_from_handle)
from aoti_cy.includes.run_gate cimport (
    aoti_cy_gate_close_and_drain, aoti_cy_gate_enter, aoti_cy_gate_is_closed,
    aoti_cy_gate_leave, aoti_cy_gate_set_closed)
from aoti_cy._call_checks cimport (
    check_input_handles, free_input_guards, input_guards_for, input_sequence,
    stream_pointer)
from aoti_cy._constant_calls cimport (
    constants_blob_size, create_over_constants, did_call_load_constants, extract_constants,
    load_constants_blob, read_constant_infos, set_pinned_async_copy, update_constants,
    update_model_constants)
from aoti_cy._library cimport (
    ModelLibrary, current_cuda_stream, enter_cuda_device, leave_cuda_device)

from aoti_cy import _package, cuda_graphs as _cuda_graphs
from aoti_cy._call import CallSpec, OUT_LEAF, OUT_TUPLE
from aoti_cy._constants import ConstantInfo, ConstantTable, unset_constants, weights_to_load
from aoti_cy._device import parse_device
from aoti_cy._library import open_library
from aoti_cy._proxy_executor import executor_for
from aoti_cy.errors import AOTIError, PackageError

__all__ = ["CAPI_VERSION", "ConstantInfo", "Model", "ModelContainer", "load"]

CAPI_VERSION = AOTI_CY_CAPI_VERSION

aoti_cy_accept_arrays_of(<PyObject*>numpy.ndarray)

# _call's output kinds as C ints: compared on every model(...) call.
cdef int _OUT_TUPLE = OUT_TUPLE
cdef int _OUT_LEAF = OUT_LEAF


# ---- the gate between calls and close() -------------------------------------

cdef int _raise_closed(_HandleOwner owner) except -1 with gil:
    raise RuntimeError(f"this {type(owner).__name__} is closed")


cdef inline int _check_open(_HandleOwner owner) except -1:
    if aoti_cy_gate_is_closed(&owner._closed):
        _raise_closed(owner)
    return 0


cdef inline int _enter(_HandleOwner owner) except -1 nogil:
    """Pass the gate before using the handle; close() waits for _leave()."""
    if not aoti_cy_gate_enter(&owner._active_runs, &owner._closed):
        _raise_closed(owner)
    return 0


cdef inline void _leave(_HandleOwner owner) noexcept nogil:
    aoti_cy_gate_leave(&owner._active_runs)


cdef int _raise_weights_missing(_HandleOwner owner) except -1 with gil:
    names = list(owner._unset_constants)
    shown = ", ".join(map(repr, names[:6])) + (
        f" and {len(names) - 6} more" if len(names) > 6 else "")
    raise RuntimeError(
        f"this {type(owner).__name__} has no value yet for {len(names)} "
        f"constants ({shown}): its package holds no weights; give them "
        f"first ({owner._weights_hint})")


@cython.no_gc_clear
cdef class _HandleOwner:
    """Base of ModelContainer and Model: their library, description, and
    the gate that lets close() wait for the calls in flight."""

    def __cinit__(self, *args, **kwargs):
        aoti_cy_gate_set_closed(&self._closed, 1)
        self._input_guards = NULL
        self._input_names = self._output_names = self._unset_constants = ()

    def __dealloc__(self):
        # After the subclass's __dealloc__: no run can be in flight.
        free_input_guards(self._input_guards)
        self._input_guards = NULL

    def close(self):
        """Wait for the calls in flight, then free the handle and the
        package's extracted files. Idempotent; every later call raises."""
        with nogil:
            aoti_cy_gate_close_and_drain(&self._active_runs, &self._closed)
        package, self._package = self._package, None
        try:
            self._free_handle()
        finally:
            if package is not None:
                package.cleanup()

    def _free_handle(self):
        """Free the C handle, once (each subclass owns one)."""

    @property
    def closed(self):
        """True once ``close()`` has been called (or creation failed)."""
        return bool(aoti_cy_gate_is_closed(&self._closed))

    @property
    def input_names(self):
        """The model's input names, in call order (tuple of str)."""
        return self._input_names

    @property
    def output_names(self):
        """The model's output names, in return order (tuple of str)."""
        return self._output_names

    @property
    def check_inputs(self):
        """Whether runs check inputs against the model's own dtype, shape,
        stride and device checks (``check_inputs=`` at load)."""
        return self._check_inputs

    def __repr__(self):
        state = ("closed" if self.closed else
                 f"{len(self._input_names)} inputs, {len(self._output_names)} outputs")
        return f"<aoti_cy.{type(self).__name__} ({state})>"

    def __enter__(self):
        _check_open(self)
        return self

    def __exit__(self, *exc_info):
        self.close()


# ---- ModelContainer ---------------------------------------------------------

# The container must still reach its library in __dealloc__: never let the
# collector clear `library` (and so dlclose it) before the container is freed.
@cython.no_gc_clear
cdef class ModelContainer(_HandleOwner):
    """An AOTInductor model container created from a model `.so`.

    ``ModelContainer(path, device="cpu", num_models=1, cubin_dir=None,
    check_inputs=True)`` loads the model library at ``path`` (opened once per
    file) and creates a container of ``num_models`` model instances, so that
    up to that many runs proceed concurrently. Prefer :func:`aoti_cy.load`
    for `.pt2` packages.

    Input checks: with ``check_inputs=True`` every run first calls the
    model's own generated checks of each input's dtype, sizes, strides and
    device (a few percent of the tiniest model's run), and a mismatch raises
    ValueError. A non-contiguous input the model was not compiled for is
    refused (pass ``x.contiguous()``), never copied behind your back.
    ``check_inputs=False`` skips them: a wrong shape or dtype then gives wrong
    numbers, or reads out of bounds and may crash the process.

    Fallback ops: a model whose graph calls ops through the proxy executor
    (custom ops, aten ops without a C shim) needs ``proxy_executor``, an
    object whose int ``handle`` is a ``torch::aot_inductor::ProxyExecutor*``
    (``aoti_cy._proxy_executor.executor_for(path, device)`` makes one from
    the package's extern nodes; :func:`aoti_cy.load` does so itself). A
    failed op's reason is added to the run's AOTIError.

    External constants: ``external_constants`` (original FQN or internal
    name -> tensor on the model's device, every constant) makes the
    container run on the caller's tensors, zero-copy: the package's own
    weights are never loaded (see :func:`load`). To check them, the first
    such container of a library makes a short-lived ordinary one (a
    transient copy of any weights the `.so` holds). Needs a model built by
    torch >= 2.14 (AOTInductorModelContainerCreateWithExternalConstants).

    Executable stack: a library whose ``PT_GNU_STACK`` header asks for an
    executable stack (every model torch 2.13 links) is loaded from a private
    copy with that request cleared, so the process stack stays
    non-executable (and glibc 2.41+, which refuses the request, loads it).
    The file at ``library_path`` is never written. Inductor-generated code
    never needs an executable stack; ``allow_executable_stack=True`` loads
    the file as it is, for a library that does.

    ``pinned_async_copy`` (CUDA models, torch >= 2.14): True stages host-to-GPU
    weight copies through pinned buffers, asynchronously; False turns that
    off; None (default) leaves the library's setting (the environment
    variable AOTI_COPY_USE_PINNED_ASYNC decides until one is made). It is a
    setting of the model library, not of one container: it applies to every
    later weight upload of every container of that `.so`.

    Thread safety: ``run`` may be called from any number of threads at once;
    ``close`` waits for runs and constant updates in flight and makes later
    calls raise. Updating the *active* constants while other threads run the
    model is not safe (the runtime frees the old values under them): update
    the inactive buffer and swap instead.
    """

    def __cinit__(self, *args, **kwargs):
        self._handle = NULL
        self._proxy_executor = NULL
        self._weights_lock = threading.Lock()
        self._extract_lock = threading.Lock()
        self._weights_hint = "with load_weights(state_dict) or update_constant_buffer()"

    def __init__(self, library_path, device="cpu", num_models=1, cubin_dir=None,
                 *, check_inputs=True, proxy_executor=None, cuda_graphs=False,
                 max_graphs=_cuda_graphs.DEFAULT_MAX_GRAPHS, static_outputs=False,
                 external_constants=None, pinned_async_copy=None,
                 allow_executable_stack=False):
        if self.library is not None:
            raise RuntimeError("ModelContainer.__init__ called twice")
        if not isinstance(num_models, int) or num_models < 1:
            raise ValueError(f"num_models must be a positive int, got {num_models!r}")
        self._device, self._device_type, self._device_index = parse_device(device)
        if pinned_async_copy is not None and not isinstance(pinned_async_copy, bool):
            raise TypeError(f"pinned_async_copy must be None, True or False, "
                            f"got {pinned_async_copy!r}")
        if pinned_async_copy and self._device_type != AOTI_CY_DEVICE_CUDA:
            raise ValueError(f"pinned_async_copy=True is for CUDA models: a model on "
                             f"{self._device} never copies its weights to a GPU")
        if proxy_executor is not None:
            # Runs hand the model this executor for its fallback ops; the
            # container keeps it alive for as long as it can run.
            handle = getattr(proxy_executor, "handle", 0)
            failure_check = getattr(proxy_executor, "failure_check", 0)
            if not handle or not failure_check:
                raise TypeError("proxy_executor must be an aoti_cy ProxyExecutor "
                                "(with non-zero handle and failure_check)")
            self._proxy_executor = <void*><uintptr_t>handle
            self._executor_failed = <ExecutorFailedFn><uintptr_t>failure_check
            self._proxy_executor_owner = proxy_executor
        self.library = open_library(library_path,
                                    allow_executable_stack=allow_executable_stack)
        if pinned_async_copy is not None:
            set_pinned_async_copy(self.library, pinned_async_copy)
        if external_constants is not None:
            self._external_constants = _external_values(self, external_constants, cubin_dir)
        _create_container(self, num_models, cubin_dir)
        # The container copied the weights embedded in the .so: let the
        # kernel drop the pages they were read from.
        self.library.release_file_pages()
        _read_description(self)
        self._check_inputs = bool(check_inputs)
        if self._check_inputs:
            self._input_guards = input_guards_for(
                self.library, self._num_inputs,
                self._device_index if self._device_type == AOTI_CY_DEVICE_CUDA else -1,
                self._input_names, self._call_spec[0])
        aoti_cy_gate_set_closed(&self._closed, 0)
        _note_active_constants(self)
        if cuda_graphs:
            try:
                self._graphs = _cuda_graphs.make_runner(
                    self, num_models=num_models, max_graphs=max_graphs,
                    static_outputs=static_outputs, proxy_executor=proxy_executor is not None)
            except BaseException:
                self.close()
                raise

    def close(self):
        """Free the CUDA graphs (if any), then wait for the calls in flight,
        free the handle and the package's extracted files. Idempotent; every
        later call raises."""
        graphs, self._graphs = self._graphs, None
        if graphs is not None:
            graphs.close()
        _HandleOwner.close(self)

    @property
    def cuda_graphs(self):
        """The :class:`aoti_cy.cuda_graphs.GraphRunner` running this model's
        calls through CUDA graphs, or None (not asked for, or not possible)."""
        return self._graphs

    def __dealloc__(self):
        # No run can be in flight: every caller holds a reference to self.
        _delete_container(self, check=False)

    def _free_handle(self):
        _delete_container(self, check=True)

    # ---- description --------------------------------------------------------

    @property
    def num_inputs(self):
        """How many tensors :meth:`run` takes."""
        return self._num_inputs

    @property
    def num_outputs(self):
        """How many tensors :meth:`run` returns."""
        return self._num_outputs

    @property
    def call_spec(self):
        """``(in_spec, out_spec)``: the serialized pytree specs of the exported
        program's inputs and outputs."""
        return self._call_spec

    @property
    def device(self):
        """The ``torch.device`` the model runs on."""
        return self._device

    @property
    def metadata(self):
        """The package's metadata for this model (``AOTI_DEVICE_KEY`` and
        the like, plus any user metadata); {} when there is none."""
        return dict(self._package.metadata) if self._package is not None else {}

    @property
    def library_path(self):
        """Path of the model `.so` this container was created from."""
        return self.library.path

    @property
    def did_call_load_constants(self):
        """Whether the runtime loaded this container's weights itself (from
        the `.so`, or found none there to load): True for every container
        but one created over ``external_constants``. It does not say whether
        the constants have values: a package whose weights live outside the
        `.so` has none until they are given, and still answers True. Needs
        AOTInductorModelContainerDidCallLoadConstants (torch >= 2.14)."""
        _check_open(self)
        _enter(self)
        try:
            return did_call_load_constants(self.library, self._handle)
        finally:
            _leave(self)

    @property
    def uses_external_constants(self):
        """Whether this container was created over the caller's tensors
        (``external_constants=``), which it then keeps alive."""
        return self._external_constants is not None

    def __repr__(self):
        return _HandleOwner.__repr__(self).replace(" (", f" on {self._device} (", 1)

    # ---- running ------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """Call the model as the exported module was called: the arguments
        are flattened by the package's input spec and the outputs rebuilt by
        its output spec (nested tuples, lists, dicts). numpy arrays are taken
        wherever tensors are, without copying."""
        return _call(self, args, kwargs, None)

    def call_on_stream(self, stream, *args, **kwargs):
        """``model(*args, **kwargs)`` issued on ``stream`` (a
        ``torch.cuda.Stream`` or a raw pointer) instead of the current one."""
        return _call(self, args, kwargs, stream)

    def _is_flat_call(self):
        """Whether ``__call__`` skips pytree (for tests and benchmarks)."""
        return self._flat_call

    def run(self, inputs, stream=None):
        """Run the model on a list (or tuple) of tensors; return a list of tensors.

        Inputs must be on the model's device; their data is not copied
        (numpy arrays are taken as CPU tensors sharing their memory). On CUDA
        the run is issued on ``stream`` (a ``torch.cuda.Stream`` or a raw
        pointer), by default the current stream of the model's device. The
        GIL is released while the model runs. With ``cuda_graphs=True`` the
        run goes through a CUDA graph (see :mod:`aoti_cy.cuda_graphs`).
        """
        return _run_default(self, inputs, stream)

    def run_single_threaded(self, inputs, stream=None):
        """Like :meth:`run`, without the container's locking and model pool:
        for one thread at a time only (e.g. CUDA graph capture). Needs
        AOTInductorModelContainerRunSingleThreaded in the model."""
        _check_open(self)
        self.library.require(<void*>self.library.fn.container_run_single_threaded,
                             "AOTInductorModelContainerRunSingleThreaded")
        return _run(self, self.library.fn.container_run_single_threaded,
                    "AOTInductorModelContainerRunSingleThreaded", inputs, stream)

    # ---- constants ----------------------------------------------------------

    @property
    def constants(self):
        """A ConstantInfo per constant of the model, in the runtime's order."""
        _check_open(self)
        if self._constants is None:
            _enter(self)
            try:
                self._constants = read_constant_infos(self.library, self._handle)
            finally:
                _leave(self)
        return self._constants

    @property
    def constant_fqns(self):
        """Map each constant's original FQN to its internal name."""
        return {c.original_fqn: c.name for c in self.constants}

    def update_constant_buffer(self, mapping, *, use_inactive=False,
                               validate_full_update=False, user_managed=False):
        """Set constants from ``mapping`` (original FQN or internal name ->
        tensor).

        Values are copied into the container's buffer, unless
        ``user_managed``: then the model uses the given tensors' memory as is.
        CPU tensors for a CUDA model are copied over. ``use_inactive`` fills
        the inactive buffer (see :meth:`swap_constant_buffer`);
        ``validate_full_update`` demands every constant that is not folded.
        Unknown keys, wrong dtypes, shapes, sizes and devices are rejected,
        naming them, before anything changes. Updating the active buffer while
        other threads run the model is unsafe; :meth:`load_weights` is the safe
        way.
        """
        _check_open(self)
        _require_slot_sizes(self)
        table = _constant_table(self)
        values = table.checked_update(mapping, full_update=validate_full_update,
                                      uncopied=user_managed)
        _update(self, values, use_inactive=use_inactive,
                full_update=validate_full_update, user_managed=user_managed)
        if not use_inactive:
            _note_active_constants(self)

    def update_inactive_constant_buffer(self, mapping):
        """Fill the inactive buffer with every constant (as the C ABI's
        UpdateInactiveConstantBuffer: a full update is required)."""
        self.update_constant_buffer(mapping, use_inactive=True, validate_full_update=True)

    def extract_constants_map(self, *, use_inactive=False):
        """Original FQN -> a copy of each constant that is not folded, from the
        active (or inactive) buffer. Copies, because the buffer's memory is
        reused by later updates."""
        _check_open(self)
        return _extract(self, use_inactive=use_inactive, copy=True)

    def run_constant_folding(self, *, use_inactive=False, stream=None):
        """Recompute the folded constants from the active (or inactive) buffer."""
        cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
        cdef cbool inactive = use_inactive
        cdef void* raw_stream = stream_pointer(stream, self._device)
        _check_open(self)
        _enter(self)
        try:
            if raw_stream == NULL and self._device_type == AOTI_CY_DEVICE_CUDA:
                current_cuda_stream(self._device_index, &raw_stream)
            with _on_model_device(self), nogil:   # folding runs kernels, makes an event
                status = _executor_checked(self, self.library.fn.container_run_constant_folding(
                    self._handle, inactive, <AOTInductorStreamHandle>raw_stream,
                    <AOTIProxyExecutorHandle>self._proxy_executor))
        finally:
            _leave(self)
        _check_status(self, status, "AOTInductorModelContainerRunConstantFolding")
        if not use_inactive and self._graphs is not None:
            self._graphs.invalidate()   # they read the folded values it replaced

    def swap_constant_buffer(self):
        """Make the inactive buffer the active one. Waits for runs in flight,
        which finish on the old constants; later runs see the new ones."""
        _buffer_action(self, self.library.fn.container_swap_constant_buffer,
                       "AOTInductorModelContainerSwapConstantBuffer")
        _note_active_constants(self)

    def free_inactive_constant_buffer(self):
        """Release the inactive buffer's memory."""
        _buffer_action(self, self.library.fn.container_free_inactive_constant_buffer,
                       "AOTInductorModelContainerFreeInactiveConstantBuffer")

    def load_weights(self, state_dict, *, strict=True):
        """Swap in new weights safely while other threads keep running.

        Fills the inactive buffer, re-folds constants if the model folds any,
        then swaps: runs in flight finish on the old weights, later runs see
        the new ones, no run sees a mix. A module's own ``state_dict()`` just
        works: keys that alias a constant given under another key with the
        same value (tied weights) are accepted, and buffers absent from the
        state dict (non-persistent ones) keep their values. ``strict`` refuses
        a weight with no value and a key that names no constant (a parameter
        inductor compiled into the kernels cannot be updated: the message
        says how to compile to keep it updatable); otherwise missing
        constants keep their current values and extra keys are ignored. Bad
        names, dtypes and shapes are rejected, naming them, before anything
        changes. Calls are serialised per container.
        """
        _check_open(self)
        _require_slot_sizes(self)
        with self._weights_lock:
            values = weights_to_load(
                _constant_table(self), state_dict, strict=strict,
                current=lambda: _extract(self, use_inactive=False, copy=True))
            _update(self, values, use_inactive=True, full_update=True, user_managed=False)
            if any([c.from_folded for c in self.constants]):
                self.run_constant_folding(use_inactive=True)
            self.swap_constant_buffer()   # notes the active constants too

    def check_weights(self, state_dict, *, strict=True):
        """Raise what :meth:`load_weights` would raise for ``state_dict``,
        changing nothing: e.g. to check every replica before any applies."""
        _check_open(self)
        _require_slot_sizes(self)
        weights_to_load(_constant_table(self), state_dict, strict=strict,
                        current=lambda: _extract(self, use_inactive=False, copy=False))

    @property
    def constants_blob_size(self):
        """Bytes of the constants blob (the layout of a package's ``.blob``)."""
        _check_open(self)
        _enter(self)
        try:
            return constants_blob_size(self.library, self._handle)
        finally:
            _leave(self)

    def update_constants_from_blob(self, const unsigned char[::1] buffer):
        """Load every constant from one buffer laid out as the model's
        constants blob (e.g. an mmap of a package's ``.blob``). Only models
        built to read external weights (``binary_blob`` packages) use it, and
        only once per container: :func:`load` already does it for such
        packages. The runtime copies the data."""
        _check_open(self)
        if self._blob_loaded:
            raise RuntimeError(
                "this container already loaded a constants blob; the runtime "
                "would leave constants pointing at freed memory if it loaded another")
        expected = self.constants_blob_size
        if <size_t>buffer.shape[0] < expected:
            raise ValueError(f"constants blob has {buffer.shape[0]} bytes, the "
                             f"model needs {expected}")
        _enter(self)
        try:
            self._blob_loaded = True
            with _on_model_device(self):
                load_constants_blob(
                    self.library, self._handle,
                    &buffer[0] if buffer.shape[0] else <const unsigned char*>NULL)
        finally:
            _leave(self)
        _note_active_constants(self)


# ---- ModelContainer internals -------------------------------------------------

cdef _create_container(ModelContainer self, size_t num_models, object cubin_dir):
    cdef ModelLibrary lib = self.library
    cdef AOTInductorModelContainerHandle handle = NULL
    cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
    cdef bytes device_str = str(self._device).encode()
    cdef bytes cubin = None if cubin_dir is None else str(cubin_dir).encode()
    cdef const char* cubin_ptr = NULL
    cdef const char* device_ptr = device_str
    cdef cbool is_cpu = self._device_type == AOTI_CY_DEVICE_CPU
    if cubin is not None:
        cubin_ptr = cubin
    if self._external_constants is not None:
        # Folds constants at creation, on the device's default stream.
        with _on_model_device(self):
            handle = create_over_constants(lib, num_models, device_ptr, cubin_ptr,
                                           self._external_constants)
    elif lib.fn.container_create_with_device != NULL:
        # The runtime makes the model's device current (cudaSetDevice) and
        # leaves it so: the guard gives the caller's back.
        with _on_model_device(self):
            with nogil:
                status = lib.fn.container_create_with_device(
                    &handle, num_models, device_ptr, cubin_ptr)
        lib.check(status, "AOTInductorModelContainerCreateWithDevice")
    else:
        # Models older than CreateWithDevice use the current CUDA device.
        with _on_model_device(self):
            with nogil:
                status = lib.fn.container_create(&handle, num_models, is_cpu, cubin_ptr)
        lib.check(status, "AOTInductorModelContainerCreate")
    self._handle = handle


cdef int _delete_container(ModelContainer self, bint check) except -1:
    """Delete the handle, once: it is taken under the GIL, so one closer
    deletes it; ``check`` raises on a failed delete (not in __dealloc__)."""
    cdef AOTInductorModelContainerHandle handle = self._handle
    cdef AOTIRuntimeError status = AOTI_RUNTIME_SUCCESS
    self._handle = NULL
    if handle != NULL:
        with nogil:
            status = self.library.fn.container_delete(handle)
        if check:
            self.library.check(status, "AOTInductorModelContainerDelete")
    return 0


# ModelLibrary -> (ConstantInfo per constant, {internal name: shape}) from a
# short-lived container of that library: what checks external constants.
_descriptions = weakref.WeakKeyDictionary()


cdef dict _external_values(ModelContainer self, object mapping, object cubin_dir):
    """The caller's tensors, checked, for a container created over them:
    {internal name: tensor}, every constant, each on the model's device."""
    cdef ModelContainer probe
    self.library.require(<void*>self.library.fn.container_create_with_external_constants,
                         "AOTInductorModelContainerCreateWithExternalConstants")
    described = _descriptions.get(self.library)
    if described is None:
        # The runtime reports constants only through a container: one made
        # once per library, the usual way (a transient copy of any weights
        # the .so holds), names what the caller's tensors must match.
        probe = ModelContainer(self.library.path, device=self._device,
                               cubin_dir=cubin_dir, check_inputs=False,
                               allow_executable_stack=self.library.executable_stack)
        with probe:
            table = _constant_table(probe)
            described = _descriptions[self.library] = (table.constants, table.shapes)
    table = ConstantTable(described[0], described[1], self._device)
    if self._proxy_executor != NULL and any([c.from_folded for c in table.constants]):
        raise PackageError(
            f"{self.library.path} folds constants and calls fallback ops through a "
            f"proxy executor; the runtime folds external constants at creation "
            f"without one. Load it without external_constants")
    # The runtime keeps these tensors as they are (a view of the memory).
    values = table.checked_update(mapping, full_update=True, uncopied=True)
    elsewhere = sorted([table.lookup(name).original_fqn for name, t in values.items()
                        if t.device != self._device])
    if elsewhere:
        raise ValueError(f"external constants must be on the model's device "
                         f"({self._device}), they are used in place: {elsewhere} are not")
    return values


cdef str _decode(const char* text):
    return text.decode("utf-8", "replace") if text != NULL else ""


cdef tuple _names(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                  ContainerGetSizeFn get_count, ContainerGetNameFn get_name,
                  const char* count_function, const char* name_function):
    cdef size_t i, count = 0
    cdef const char* text = NULL
    lib.check(get_count(handle, &count), count_function)
    names = []
    for i in range(count):
        lib.check(get_name(handle, i, &text), name_function)
        names.append(_decode(text))
    return tuple(names)


cdef _read_description(ModelContainer self):
    """Input and output names and the call spec, read once at creation."""
    cdef ModelLibrary lib = self.library
    cdef const char* text = NULL
    cdef const char* text2 = NULL
    self._input_names = _names(
        lib, self._handle, lib.fn.container_get_num_inputs, lib.fn.container_get_input_name,
        "AOTInductorModelContainerGetNumInputs", "AOTInductorModelContainerGetInputName")
    self._num_inputs = len(self._input_names)
    self._output_names = _names(
        lib, self._handle, lib.fn.container_get_num_outputs, lib.fn.container_get_output_name,
        "AOTInductorModelContainerGetNumOutputs", "AOTInductorModelContainerGetOutputName")
    self._num_outputs = len(self._output_names)
    lib.check(lib.fn.container_get_call_spec(self._handle, &text, &text2),
              "AOTInductorModelContainerGetCallSpec")
    self._call_spec = (_decode(text), _decode(text2))
    self._call_spec_parser = CallSpec(self._call_spec[0], self._call_spec[1],
                                      self._num_inputs)
    self._flat_call = (self._call_spec_parser.error is None
                       and self._call_spec_parser.flat_inputs)
    self._out_kind = getattr(self._call_spec_parser, "out_kind", 0)


cdef object _call(ModelContainer self, tuple args, dict kwargs, object stream):
    cdef list outputs
    if self._flat_call and not kwargs:
        # The common case, without pytree: a flat tuple in, flat out.
        if self._out_kind == _OUT_TUPLE and self._graphs is None:
            return _run(self, self.library.fn.container_run,
                        "AOTInductorModelContainerRun", args, stream, as_tuple=True)
        outputs = _run_default(self, args, stream)
        if self._out_kind == _OUT_TUPLE:
            return tuple(outputs)
        if self._out_kind == _OUT_LEAF:
            return outputs[0]
    else:
        _check_open(self)
        outputs = _run_default(self, self._call_spec_parser.flatten(args, kwargs), stream)
    return self._call_spec_parser.unflatten(outputs)


cdef list _run_default(ModelContainer self, object inputs, object stream):
    """A run of ``run`` and ``model(...)``: through a CUDA graph where graphs
    are on and the call can be graphed, else a plain run."""
    cdef list outputs
    if self._graphs is not None:
        outputs = self._graphs.run(self, inputs, stream)
        if outputs is not None:
            return outputs
    return _run(self, self.library.fn.container_run,
                "AOTInductorModelContainerRun", inputs, stream)


cdef object _run(ModelContainer self, ContainerRunFn entry, const char* function,
                 object inputs, object stream, bint as_tuple=False):
    """The Python run path: tensors in, GIL released around the model, a
    list of tensors out (a tuple ``as_tuple``)."""
    cdef AotiCyRunBuffers buffers
    cdef size_t num_inputs = self._num_inputs, num_outputs = self._num_outputs
    cdef AotiCyDevice device
    cdef void* raw_stream

    if aoti_cy_gate_is_closed(&self._closed):
        _raise_closed(self)
    raw_stream = stream_pointer(stream, self._device)
    if raw_stream != NULL and self._device_type != AOTI_CY_DEVICE_CUDA:
        raise ValueError("stream is only meaningful for CUDA models")
    inputs = input_sequence(inputs, num_inputs, self._input_names)
    buffers.reserve(num_inputs, num_outputs)
    device.type = self._device_type
    device.index = self._device_index
    aoti_cy_handles_from_tensors(
        PySequence_Fast_ITEMS(inputs), num_inputs, buffers.inputs, device,
        <PyObject*>self._input_names, buffers.keepalive)
    try:
        with nogil:
            _invoke(self, entry, function, buffers.inputs, num_inputs,
                    buffers.outputs, num_outputs, raw_stream)
    finally:
        # Dropped here, with the GIL: see aoti_cy_handles_from_tensors.
        aoti_cy_drop_refs(buffers.keepalive, num_inputs)
    if as_tuple:
        return aoti_cy_tuple_from_handles(buffers.outputs, num_outputs)
    return aoti_cy_list_from_handles(buffers.outputs, num_outputs)


cdef int _invoke(ModelContainer self, ContainerRunFn entry, const char* function,
                 AtenTensorHandle* inputs, size_t num_inputs,
                 AtenTensorHandle* outputs, size_t num_outputs,
                 void* stream) except -1 nogil:
    """One run on raw handles, without the GIL: both the Python run path and
    the public run_handles end here."""
    cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
    cdef bint called = False
    cdef void* device_guard = NULL
    cdef size_t i
    for i in range(num_outputs):
        outputs[i] = NULL
    try:
        if num_inputs != self._num_inputs or num_outputs != self._num_outputs:
            with gil:
                raise ValueError(
                    f"the model takes {self._num_inputs} inputs and "
                    f"{self._num_outputs} outputs, got {num_inputs} and "
                    f"{num_outputs}")
        if self._weights_missing:
            _raise_weights_missing(self)
        if self._input_guards != NULL:
            check_input_handles(self._input_guards, inputs, num_inputs)
        if self._device_type == AOTI_CY_DEVICE_CUDA:
            if stream == NULL:
                current_cuda_stream(self._device_index, &stream)
            enter_cuda_device(self._device_index, &device_guard)
        _enter(self)
        status = _executor_checked(self, entry(
            self._handle, inputs, num_inputs, outputs, num_outputs,
            <AOTInductorStreamHandle>stream, <AOTIProxyExecutorHandle>self._proxy_executor))
        _leave(self)
        called = True
    finally:
        leave_cuda_device(device_guard)
        if status != AOTI_RUNTIME_SUCCESS:
            # The model nulls each input handle it takes; free the rest.
            aoti_cy_free_handles(inputs, num_inputs)
            aoti_cy_free_handles(outputs, num_outputs)
    if called and status != AOTI_RUNTIME_SUCCESS:
        _check_status(self, status, function)
    return 0


cdef inline AOTIRuntimeError _executor_checked(
        ModelContainer self, AOTIRuntimeError status) noexcept nogil:
    """A failure when the call succeeded but one of its fallback ops failed:
    models of torch 2.11 go on after a failed extern call."""
    if (status == AOTI_RUNTIME_SUCCESS and self._proxy_executor != NULL
            and self._executor_failed(self._proxy_executor)):
        return AOTI_RUNTIME_FAILURE
    return status


cdef int _check_status(ModelContainer self, AOTIRuntimeError status,
                       const char* function) except -1 nogil:
    """AOTIError for a failed call, with the proxy executor's reason added:
    the model reports only that a fallback op failed, not which or why."""
    if status == AOTI_RUNTIME_SUCCESS:
        return 0
    if self._proxy_executor == NULL:
        return self.library.check(status, function)
    with gil:
        try:
            self.library.check(status, function)
        except AOTIError as error:
            reason = self._proxy_executor_owner.take_error()
            if not reason:
                raise
            raise AOTIError(error.function, f"{error.detail}; {reason}") from None
    return 0


cdef _buffer_action(ModelContainer self, ContainerActionFn entry, const char* function):
    cdef AOTIRuntimeError status
    _check_open(self)
    self.library.require(<void*>entry, function)
    _enter(self)
    try:
        with nogil:
            status = entry(self._handle)
    finally:
        _leave(self)
    self.library.check(status, function)


cdef dict _extract(ModelContainer self, bint use_inactive, bint copy):
    """Original FQN -> tensor of each constant (views without ``copy``)."""
    _enter(self)
    try:
        # The entries live in the container until its next extract: one at a time.
        with self._extract_lock:
            return extract_constants(self.library, self._handle, use_inactive, copy)
    finally:
        _leave(self)


cdef object _on_model_device(ModelContainer self):
    """A context making the model's GPU current: the runtime allocates
    constant buffers and events on the current device. A no-op on CPU."""
    return torch.cuda.device(
        self._device_index if self._device_type == AOTI_CY_DEVICE_CUDA else -1)


cdef _update(ModelContainer self, dict values, bint use_inactive, bint full_update,
             bint user_managed):
    _enter(self)
    try:
        with _on_model_device(self):
            update_constants(self.library, self._handle, values, self._device,
                             use_inactive, full_update, user_managed)
    finally:
        _leave(self)


cdef bint _can_extract(ModelContainer self):
    return (self.library.fn.container_extract_constants_map_entries != NULL
            or self.library.fn.container_extract_constants_map != NULL)


cdef object _constant_table(ModelContainer self):
    """The ConstantTable that checks values for this container."""
    if self._shapes is None and _can_extract(self):
        # Internal name -> shape of each constant with a value in the
        # active buffer; kept once every constant has one.
        fqn_to_name = self.constant_fqns
        shapes = {fqn_to_name[fqn]: tuple(t.shape) for fqn, t in
                  _extract(self, use_inactive=False, copy=False).items()}
        if not unset_constants(self.constants, shapes):
            self._shapes = shapes
        return ConstantTable(self.constants, shapes, self._device)
    return ConstantTable(self.constants, self._shapes or {}, self._device)


cdef _require_slot_sizes(ModelContainer self):
    # The runtime copies each tensor's whole storage into the constant's slot
    # without a bounds check: without the sizes, refuse rather than risk
    # writing past it.
    self.library.require(<void*>self.library.fn.container_get_constant_data_size,
                         "AOTInductorModelContainerGetConstantDataSize")


cdef _note_active_constants(ModelContainer self):
    """Record which constants still have no value in the active buffer
    (a package compiled without its weights): runs refuse until they do,
    since the model would read through null pointers."""
    if self._graphs is not None:
        self._graphs.invalidate()   # they read the buffers this change replaced
    if not _can_extract(self):
        return
    fqn_to_name = self.constant_fqns
    present = {fqn_to_name[fqn] for fqn in _extract(self, use_inactive=False, copy=False)}
    self._unset_constants = tuple(unset_constants(self.constants, present))
    self._weights_missing = bool(self._unset_constants)


def load(path, *, device=None, num_models=1, model_name="model", check_inputs=True,
         cuda_graphs=False, max_graphs=_cuda_graphs.DEFAULT_MAX_GRAPHS,
         static_outputs=False, external_constants=None, pinned_async_copy=None,
         allow_executable_stack=False):
    """Load an AOTInductor artifact and return a :class:`ModelContainer`.

    ``path`` is a `.pt2` package (from ``aoti_compile_and_package``), an
    extracted package directory, or a bare model `.so`. ``device=None`` means
    the device the model was compiled for. ``model_name`` picks one model of
    a package that holds several. ``check_inputs`` is as for
    :class:`ModelContainer`. ``cuda_graphs=True`` runs calls through CUDA
    graphs captured per input signature (at most ``max_graphs`` per model
    instance; ``static_outputs=True`` returns the graphs' own output
    buffers): see :mod:`aoti_cy.cuda_graphs`.

    ``external_constants`` (original FQN or internal name -> tensor on the
    model's device, every constant) creates the container over those tensors
    instead of the package's weights, which are then never read: no copy is
    made, so weights memory-mapped from a file (``safetensors.safe_open``,
    ``torch.load(..., mmap=True)``) stay in the page cache, and several
    containers (or processes mapping the same file) share one copy. The
    container keeps the tensors alive and sees later in-place changes to
    them. Values are checked (names, dtypes, shapes, devices) first; a
    non-contiguous one, or where the package holds no weights to learn the
    shapes from, one shorter than its 64-byte aligned slot, is copied.
    Needs a model built by torch >= 2.14.
    ``pinned_async_copy`` and ``allow_executable_stack`` are as for
    :class:`ModelContainer`: by default the model library is loaded with its
    executable-stack request cleared (in aoti_cy's own copy; a `.so` you pass
    is never written).
    """
    cdef ModelContainer container
    artifact = _package.open_artifact(path, model_name,
                                      allow_executable_stack=allow_executable_stack)
    try:
        if device is None:
            device = artifact.device
        container = ModelContainer(
            artifact.library_path, device=device, num_models=num_models,
            cubin_dir=artifact.cubin_dir, check_inputs=check_inputs,
            proxy_executor=executor_for(artifact.library_path, device),
            cuda_graphs=cuda_graphs, max_graphs=max_graphs, static_outputs=static_outputs,
            external_constants=external_constants, pinned_async_copy=pinned_async_copy,
            allow_executable_stack=allow_executable_stack)
        container._package = artifact
        if external_constants is None:
            artifact.load_weights_into(container)
    except BaseException:
        artifact.cleanup()
        raise
    return container


# ---- Model --------------------------------------------------------------------

@cython.no_gc_clear
cdef class Model(_HandleOwner):
    """One AOTInductor model instance (``AOTInductorModel*``), without the
    container's pool, locking or constant buffers: the C ABI's bare-metal
    path, for CPU models.

    ``Model(path, constants=None, *, model_name="model", check_inputs=True,
    allow_executable_stack=False)`` takes what :func:`load` takes (a `.pt2`, an extracted package directory
    or a model `.so`) and uses the package's weights, or ``constants``
    (original FQN or internal name -> CPU tensor, every constant) instead.
    A package without weights refuses to run until
    :meth:`update_constants_map` gives them. Runs are
    serialised: one instance runs one call at a time (use a container for
    concurrency). ``check_inputs`` and ``allow_executable_stack`` are as for
    :class:`ModelContainer`.
    """

    def __cinit__(self, *args, **kwargs):
        self._handle = NULL
        self._lock = threading.Lock()
        self._weights_hint = "with update_constants_map()"

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
            values, call_spec_text = _describe_from_probe(
                self, artifact, constants, allow_executable_stack)
        except BaseException:
            artifact.cleanup()
            raise
        self._package = artifact
        lib = self.library
        self._num_inputs = len(self._input_names)
        self._num_outputs = len(self._output_names)
        self._check_inputs = bool(check_inputs)
        if self._check_inputs:
            self._input_guards = input_guards_for(lib, self._num_inputs, -1,   # CPU only
                                                  self._input_names, call_spec_text)
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
        self._handle = handle
        aoti_cy_gate_set_closed(&self._closed, 0)
        if values:
            self.update_constants_map(values)

    def __dealloc__(self):
        _delete_model(self, check=False)

    def _free_handle(self):
        _delete_model(self, check=True)

    @property
    def num_outputs(self):
        """How many tensors :meth:`run` returns (from AOTInductorModelGetNumOutputs)."""
        cdef size_t count = 0
        _check_open(self)
        _enter(self)   # close() on another thread waits for this call
        try:
            self.library.check(self.library.fn.model_get_num_outputs(self._handle, &count),
                               "AOTInductorModelGetNumOutputs")
        finally:
            _leave(self)
        return count

    @property
    def constants(self):
        """A ConstantInfo per constant (as the container reports them)."""
        return self._constants

    def run(self, inputs):
        """Run on a list (or tuple) of CPU tensors; return a list of tensors."""
        cdef AotiCyRunBuffers buffers
        cdef size_t num_inputs = self._num_inputs, num_outputs = self._num_outputs
        cdef AotiCyDevice device
        cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
        _check_open(self)
        if self._weights_missing:
            _raise_weights_missing(self)
        inputs = input_sequence(inputs, num_inputs, self._input_names)
        buffers.reserve(num_inputs, num_outputs)
        device.type = AOTI_CY_DEVICE_CPU
        device.index = -1
        aoti_cy_handles_from_tensors(PySequence_Fast_ITEMS(inputs), num_inputs,
                                     buffers.inputs, device, <PyObject*>self._input_names,
                                     buffers.keepalive)
        try:
            if self._input_guards != NULL:
                with nogil:
                    check_input_handles(self._input_guards, buffers.inputs, num_inputs)
            with self._lock:   # one instance, one run at a time
                with nogil:
                    _enter(self)
                    status = self.library.fn.model_run(
                        self._handle, buffers.inputs, buffers.outputs)
                    _leave(self)
        finally:
            aoti_cy_drop_refs(buffers.keepalive, num_inputs)   # with the GIL, as in _run
            if status != AOTI_RUNTIME_SUCCESS:
                aoti_cy_free_handles(buffers.inputs, num_inputs)
                aoti_cy_free_handles(buffers.outputs, num_outputs)
        self.library.check(status, "AOTInductorModelRun")
        return aoti_cy_list_from_handles(buffers.outputs, num_outputs)

    def update_constants_map(self, mapping):
        """Replace the model's constants (original FQN or internal name ->
        CPU tensor, every constant). Not concurrent with :meth:`run`."""
        _check_open(self)
        # The model keeps these tensors as they are (no copy into slots).
        values = self._table.checked_update(mapping, full_update=True, uncopied=True)
        _enter(self)   # close() on another thread waits for the gate
        try:
            with self._lock:
                update_model_constants(self.library, self._handle, values)
                self._unset_constants = ()
                self._weights_missing = False
        finally:
            _leave(self)


cdef int _delete_model(Model self, bint check) except -1:
    """As _delete_container, for a single model instance."""
    cdef AOTInductorModelHandle handle = self._handle
    cdef AOTIRuntimeError status = AOTI_RUNTIME_SUCCESS
    self._handle = NULL
    if handle != NULL:
        with nogil:
            status = self.library.fn.model_delete(handle)
        if check:
            self.library.check(status, "AOTInductorModelDelete")
    return 0


cdef object _describe_from_probe(Model self, object artifact, object constants,
                                 bint allow_executable_stack):
    """Fill in what the single-instance ABI cannot say (inputs, outputs,
    constants) from a short-lived container of the same .so, which also reads
    weights stored outside it; return the constants to give the model and
    the text of the input call spec."""
    cdef ModelContainer probe = ModelContainer(
        artifact.library_path, device="cpu", check_inputs=False,
        allow_executable_stack=allow_executable_stack)
    values = call_spec_text = None
    with probe:
        artifact.load_weights_into(probe)
        self.library = probe.library
        self._input_names = probe.input_names
        self._output_names = probe.output_names
        self._constants = probe.constants
        self._table = _constant_table(probe)
        if constants is not None:
            values = self._table.checked_update(constants, full_update=True)
        elif artifact.stores_weights_outside_library:
            values = _extract(probe, use_inactive=False, copy=True)
            if len(values) < len(self._table.unset({})):
                values = None   # a package without its weights
        self._unset_constants = () if values else probe._unset_constants
        self._weights_missing = bool(self._unset_constants)
        call_spec_text = probe._call_spec[0]
    return values, call_spec_text


# ---- the public C API (interface.pxd) ------------------------------------------

cdef int capi_version() noexcept nogil:
    return AOTI_CY_CAPI_VERSION


cdef int run_handles(ModelContainer container,
                     AtenTensorHandle* inputs, size_t num_inputs,
                     AtenTensorHandle* outputs, size_t num_outputs,
                     void* stream) except -1 nogil:
    if container is None:
        aoti_cy_free_handles(inputs, num_inputs)
        with gil:
            raise TypeError("run_handles needs a ModelContainer, got None")
    return _invoke(container, container.library.fn.container_run,
                   "AOTInductorModelContainerRun",
                   inputs, num_inputs, outputs, num_outputs, stream)


cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL:
    return aoti_cy_handle_from_tensor(tensor)


cdef object tensor_from_handle(AtenTensorHandle handle):
    return aoti_cy_tensor_from_handle(handle)


cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil:
    return aoti_cy_new_handle_ref(handle)


cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil:
    aoti_cy_free_handles(handles, count)
