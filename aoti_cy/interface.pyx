"""ModelContainer and load(): AOTInductor model containers driven through
their C ABI.

The run path, gate and input checks are the base's (``_handle_owner``);
``Model`` (one instance, no container) lives in ``_model``; the public C API
in ``capi``. Where the Python API differs from the C ABI:
- input counts are checked before the C call (the C side throws across the
  ABI on a mismatch, which aborts the process);
- inputs are checked to live on the model's device before the C call, and
  by default against the model's shape contract and own checks (see
  ``check_inputs``);
- a failed call frees every handle the model did not take and raises
  AOTIError with the runtime's own message;
- the GIL is released around every call into the model;
- CUDA runs go on the current stream of the *model's* device by default.

Constants go through ``_constant_calls`` (the entry points of each torch
release) after ``_constants`` validated them; what a library says of itself
is read once (``_description``); CUDA graphs live in ``cuda_graphs``.
"""

cimport cython
from libc.stdint cimport uintptr_t
from libcpp cimport bool as cbool

import threading


from aoti_cy.includes.abi cimport (
    AOTI_RUNTIME_FAILURE, AOTI_RUNTIME_SUCCESS, AOTIProxyExecutorHandle, AOTIRuntimeError,
    AOTInductorModelContainerHandle, AOTInductorStreamHandle, AtenTensorHandle,
    ContainerActionFn, ContainerGetNameFn, ContainerGetSizeFn, ContainerRunFn)
from aoti_cy.includes.run_gate cimport aoti_cy_gate_set_closed
from aoti_cy._constant_calls cimport (
    constants_blob_size, create_over_constants, did_call_load_constants, extract_constants,
    load_constants_blob, read_constant_infos, set_pinned_async_copy, update_constants)
from aoti_cy._device cimport (
    AOTI_CY_DEVICE_CPU, AOTI_CY_DEVICE_CUDA, current_stream, enter_device, guard_for,
    leave_device)
from aoti_cy._handle_owner cimport _HandleOwner
from aoti_cy._library cimport ModelLibrary

from aoti_cy import _description, _package, cuda_graphs as _cuda_graphs
from aoti_cy._constants import ConstantInfo, ConstantTable, ConstantsState, weights_to_load
from aoti_cy._device import parse_device
from aoti_cy._library import open_library
from aoti_cy._proxy_executor import executor_for
from aoti_cy.errors import AOTIError, PackageError

__all__ = ["ConstantInfo", "Model", "ModelContainer", "load"]

# The base class, also by its old name here: a consumer compiled against C API
# version 2 looks its type up in this module, and then meets the clear error
# (the C functions it binds are no longer exported) instead of a bare
# AttributeError.
globals()["_HandleOwner"] = _HandleOwner


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
        self._proxy_executor = NULL
        self._weights_lock = threading.Lock()
        self._extract_lock = threading.Lock()

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
            self._external_constants = self.external_values(external_constants, cubin_dir)
        self.create(num_models, cubin_dir)
        # The container copied the weights embedded in the .so: let the
        # kernel drop the pages they were read from.
        self.library.release_file_pages()
        self.describe(self.read_description(), self._device, bool(check_inputs))
        self._weights = ConstantsState(
            self._description, self._device,
            "with load_weights(state_dict) or update_constant_buffer()")
        aoti_cy_gate_set_closed(&self._closed, 0)
        present = self.note_active_constants()
        if self._external_constants is None and self._description.embedded is None:
            self._description.embedded = present   # what the .so gives every new one
        if cuda_graphs:
            try:
                self._graphs = _cuda_graphs.make_runner(
                    self, num_models=num_models, max_graphs=max_graphs,
                    static_outputs=static_outputs, proxy_executor=proxy_executor is not None,
                    mode=cuda_graphs)
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

    @property
    def did_call_load_constants(self):
        """Whether the runtime loaded this container's weights itself (from
        the `.so`, or found none there to load): True for every container
        but one created over ``external_constants``. It does not say whether
        the constants have values: a package whose weights live outside the
        `.so` has none until they are given, and still answers True. Needs
        AOTInductorModelContainerDidCallLoadConstants (torch >= 2.14)."""
        self.check_open()
        self.enter()
        try:
            return did_call_load_constants(self.library, <AOTInductorModelContainerHandle>self._handle)
        finally:
            self.leave()

    @property
    def uses_external_constants(self):
        """Whether this container was created over the caller's tensors
        (``external_constants=``), which it then keeps alive."""
        return self._external_constants is not None

    # ---- running ------------------------------------------------------------

    def call_on_stream(self, stream, *args, **kwargs):
        """``model(*args, **kwargs)`` issued on ``stream`` (a
        ``torch.cuda.Stream`` or a raw pointer) instead of the current one."""
        return self.call(args, kwargs, stream)

    def run(self, inputs, stream=None):
        """Run the model on a list (or tuple) of tensors; return a list of tensors.

        Inputs must be on the model's device; their data is not copied
        (numpy arrays are taken as CPU tensors sharing their memory). On CUDA
        the run is issued on ``stream`` (a ``torch.cuda.Stream`` or a raw
        pointer), by default the current stream of the model's device. The
        GIL is released while the model runs. With ``cuda_graphs=True`` (or
        ``"auto"``, where it chose graphs) the run goes through a CUDA graph
        (see :mod:`aoti_cy.cuda_graphs`).
        """
        return self.run_default(inputs, stream, False)

    def run_single_threaded(self, inputs, stream=None):
        """Like :meth:`run`, without the container's locking and model pool:
        for one thread at a time only (e.g. CUDA graph capture). Needs
        AOTInductorModelContainerRunSingleThreaded in the model."""
        self.check_open()
        self.library.require(<void*>self.library.fn.container_run_single_threaded,
                             "AOTInductorModelContainerRunSingleThreaded")
        return self.run_tensors(inputs, stream, True, False)

    def _run_plain(self, inputs, stream=None):
        """A run that never goes through CUDA graphs, with the container's
        locking and model pool (``cuda_graphs="auto"`` times it)."""
        return self.run_tensors(inputs, stream, False, False)

    cdef object run_default(self, object inputs, object stream, bint as_tuple):
        """Through a CUDA graph where graphs are on and the call can be
        graphed, else a plain run."""
        if self._graphs is not None:
            outputs = self._graphs.run(self, inputs, stream)
            if outputs is not None:
                return tuple(outputs) if as_tuple else outputs
            if self._graphs.enabled:
                # A capture runs the container single-threaded: a plain run
                # waits for one in progress (and holds the next back).
                with self._graphs.plain_runs:
                    return self.run_tensors(inputs, stream, False, as_tuple)
        return self.run_tensors(inputs, stream, False, as_tuple)

    cdef AOTIRuntimeError call_entry(self, AtenTensorHandle* inputs,
                                     AtenTensorHandle* outputs, void* stream,
                                     bint single_threaded) noexcept nogil:
        cdef ContainerRunFn entry = (self.library.fn.container_run_single_threaded
                                     if single_threaded else self.library.fn.container_run)
        cdef AOTIRuntimeError status = entry(
            <AOTInductorModelContainerHandle>self._handle, inputs, self._num_inputs, outputs, self._num_outputs,
            <AOTInductorStreamHandle>stream, <AOTIProxyExecutorHandle>self._proxy_executor)
        return self.executor_checked(status)

    cdef const char* entry_name(self, bint single_threaded) noexcept nogil:
        return ("AOTInductorModelContainerRunSingleThreaded" if single_threaded
                else "AOTInductorModelContainerRun")

    cdef AOTIRuntimeError executor_checked(self, AOTIRuntimeError status) noexcept nogil:
        """A failure when the call succeeded but one of its fallback ops
        failed: models of torch 2.11 go on after a failed extern call."""
        if (status == AOTI_RUNTIME_SUCCESS and self._proxy_executor != NULL
                and self._executor_failed(self._proxy_executor)):
            return AOTI_RUNTIME_FAILURE
        return status

    cdef int raise_failure(self, AOTIRuntimeError status, const char* function) except -1 nogil:
        """AOTIError for a failed call, with the proxy executor's reason
        added: the model reports only that a fallback op failed, not which
        or why."""
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

    # ---- constants ----------------------------------------------------------

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
        self.check_open()
        self.require_slot_sizes()
        values = self.constant_table().checked_update(
            mapping, full_update=validate_full_update, uncopied=user_managed)
        self.update(values, use_inactive, validate_full_update, user_managed)
        if not use_inactive:
            self.note_active_constants()

    def update_inactive_constant_buffer(self, mapping):
        """Fill the inactive buffer with every constant (as the C ABI's
        UpdateInactiveConstantBuffer: a full update is required)."""
        self.update_constant_buffer(mapping, use_inactive=True, validate_full_update=True)

    def extract_constants_map(self, *, use_inactive=False):
        """Original FQN -> a copy of each constant that is not folded, from the
        active (or inactive) buffer. Copies, because the buffer's memory is
        reused by later updates."""
        self.check_open()
        return self.extract(use_inactive, True)

    def run_constant_folding(self, *, use_inactive=False, stream=None):
        """Recompute the folded constants from the active (or inactive) buffer."""
        cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
        cdef cbool inactive = use_inactive
        cdef void* raw_stream = self.stream_for(stream)
        cdef void* device_guard = NULL
        self.check_open()
        self.enter()
        try:
            with nogil:   # folding runs kernels and makes an event on the current device
                if self._device_type == AOTI_CY_DEVICE_CUDA:
                    if raw_stream == NULL:
                        current_stream(self._device_index, &raw_stream)
                    enter_device(self._device_type, self._device_index, &device_guard)
                status = self.executor_checked(self.library.fn.container_run_constant_folding(
                    <AOTInductorModelContainerHandle>self._handle, inactive, <AOTInductorStreamHandle>raw_stream,
                    <AOTIProxyExecutorHandle>self._proxy_executor))
        finally:
            leave_device(device_guard)
            self.leave()
        self.raise_failure(status, "AOTInductorModelContainerRunConstantFolding")
        if not use_inactive and self._graphs is not None:
            self._graphs.invalidate()   # they read the folded values it replaced

    def swap_constant_buffer(self):
        """Make the inactive buffer the active one. Waits for runs in flight,
        which finish on the old constants; later runs see the new ones."""
        self.buffer_action(<void*>self.library.fn.container_swap_constant_buffer,
                           "AOTInductorModelContainerSwapConstantBuffer")
        self.note_active_constants()

    def free_inactive_constant_buffer(self):
        """Release the inactive buffer's memory."""
        self.buffer_action(<void*>self.library.fn.container_free_inactive_constant_buffer,
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
        self.check_open()
        self.require_slot_sizes()
        with self._weights_lock:
            values = weights_to_load(self.constant_table(), state_dict, strict=strict,
                                     current=lambda: self.extract(False, True))
            self.update(values, True, True, False)
            if self._weights.folds:
                self.run_constant_folding(use_inactive=True)
            self.swap_constant_buffer()   # notes the active constants too

    def check_weights(self, state_dict, *, strict=True):
        """Raise what :meth:`load_weights` would raise for ``state_dict``,
        changing nothing: e.g. to check every replica before any applies."""
        self.check_open()
        self.require_slot_sizes()
        weights_to_load(self.constant_table(), state_dict, strict=strict,
                        current=lambda: self.extract(False, False))

    @property
    def constants_blob_size(self):
        """Bytes of the constants blob (the layout of a package's ``.blob``)."""
        self.check_open()
        self.enter()
        try:
            return constants_blob_size(self.library, <AOTInductorModelContainerHandle>self._handle)
        finally:
            self.leave()

    def update_constants_from_blob(self, const unsigned char[::1] buffer):
        """Load every constant from one buffer laid out as the model's
        constants blob (e.g. an mmap of a package's ``.blob``). Only models
        built to read external weights (``binary_blob`` packages) use it, and
        only once per container: :func:`load` already does it for such
        packages. The runtime copies the data."""
        self.check_open()
        if self._blob_loaded:
            raise RuntimeError(
                "this container already loaded a constants blob; the runtime "
                "would leave constants pointing at freed memory if it loaded another")
        expected = self.constants_blob_size
        if <size_t>buffer.shape[0] < expected:
            raise ValueError(f"constants blob has {buffer.shape[0]} bytes, the "
                             f"model needs {expected}")
        self.enter()
        try:
            self._blob_loaded = True
            with _on_device(self):
                load_constants_blob(
                    self.library, <AOTInductorModelContainerHandle>self._handle,
                    &buffer[0] if buffer.shape[0] else <const unsigned char*>NULL)
        finally:
            self.leave()
        self.note_active_constants()

    # ---- internals ------------------------------------------------------------

    cdef create(self, size_t num_models, object cubin_dir):
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
        # The runtime allocates on the current device and leaves the model's
        # device current (cudaSetDevice): the guard gives the caller's back.
        with _on_device(self):
            if self._external_constants is not None:
                # Folds constants at creation, on the device's default stream.
                handle = create_over_constants(lib, num_models, device_ptr, cubin_ptr,
                                               self._external_constants)
            elif lib.fn.container_create_with_device != NULL:
                with nogil:
                    status = lib.fn.container_create_with_device(
                        &handle, num_models, device_ptr, cubin_ptr)
                lib.check(status, "AOTInductorModelContainerCreateWithDevice")
            else:
                # Models older than CreateWithDevice use the current CUDA device.
                with nogil:
                    status = lib.fn.container_create(&handle, num_models, is_cpu, cubin_ptr)
                lib.check(status, "AOTInductorModelContainerCreate")
        self.own_handle(handle, <void*>lib.fn.container_delete, "AOTInductorModelContainerDelete")

    cdef object read_description(self):
        """The library's description: the one cached for it, else read from
        this container (names, call spec, constants) and cached."""
        cdef ModelLibrary lib = self.library
        cdef const char* text = NULL
        cdef const char* text2 = NULL
        description = _description.cached(lib)
        if description is not None:
            return description
        input_names = _names(
            lib, <AOTInductorModelContainerHandle>self._handle, lib.fn.container_get_num_inputs,
            lib.fn.container_get_input_name,
            "AOTInductorModelContainerGetNumInputs", "AOTInductorModelContainerGetInputName")
        output_names = _names(
            lib, <AOTInductorModelContainerHandle>self._handle, lib.fn.container_get_num_outputs,
            lib.fn.container_get_output_name,
            "AOTInductorModelContainerGetNumOutputs", "AOTInductorModelContainerGetOutputName")
        lib.check(lib.fn.container_get_call_spec(<AOTInductorModelContainerHandle>self._handle, &text, &text2),
                  "AOTInductorModelContainerGetCallSpec")
        description = _description.ModelDescription(
            input_names, output_names, (_decode(text), _decode(text2)),
            read_constant_infos(lib, <AOTInductorModelContainerHandle>self._handle))
        return _description.remember(lib, description)

    cdef dict external_values(self, object mapping, object cubin_dir):
        """The caller's tensors, checked, for a container created over them:
        {internal name: tensor}, every constant, each on the model's device."""
        self.library.require(
            <void*>self.library.fn.container_create_with_external_constants,
            "AOTInductorModelContainerCreateWithExternalConstants")
        described = _description.description_for(self.library, self._device, cubin_dir)
        table = ConstantTable(described.constants, described.shapes, self._device)
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

    cdef bint can_extract(self):
        return (self.library.fn.container_extract_constants_map_entries != NULL
                or self.library.fn.container_extract_constants_map != NULL)

    cdef object constant_table(self):
        """The ConstantTable that checks values for this container."""
        if self._description.shapes is None and self.can_extract():
            # Internal name -> shape of each constant with a value in the
            # active buffer; the description keeps them once every one is known.
            fqn_to_name = self._weights.fqn_to_name()
            return self._weights.learn_shapes(
                {fqn_to_name[fqn]: tuple(t.shape)
                 for fqn, t in self.extract(False, False).items()})
        return self._weights.table()

    cdef dict extract(self, bint use_inactive, bint copy):
        """Original FQN -> tensor of each constant (views without ``copy``)."""
        self.enter()
        try:
            # The entries live in the container until its next extract: one at a time.
            with self._extract_lock:
                return extract_constants(self.library, <AOTInductorModelContainerHandle>self._handle, use_inactive, copy)
        finally:
            self.leave()

    cdef update(self, dict values, bint use_inactive, bint full_update, bint user_managed):
        self.enter()
        try:
            with _on_device(self):   # new constant buffers go to the current device
                update_constants(self.library, <AOTInductorModelContainerHandle>self._handle, values, self._device,
                                 use_inactive, full_update, user_managed)
        finally:
            self.leave()

    cdef object note_active_constants(self):
        """Record which constants have a value in the active buffer (a
        package compiled without its weights has none): runs refuse until
        every one has. Returns their internal names (None: the model cannot
        say)."""
        if self._graphs is not None:
            self._graphs.invalidate()   # they read the buffers this change replaced
        if not self.can_extract():
            return None
        fqn_to_name = self._weights.fqn_to_name()
        shapes = {fqn_to_name[fqn]: tuple(t.shape)
                  for fqn, t in self.extract(False, False).items()}
        if self._description.shapes is None:
            self._weights.learn_shapes(shapes)
        self.note_constants_present(shapes)
        return frozenset(shapes)

    cdef buffer_action(self, void* entry, const char* function):
        cdef AOTIRuntimeError status
        cdef ContainerActionFn action = <ContainerActionFn>entry
        self.check_open()
        self.library.require(entry, function)
        self.enter()
        try:
            with nogil:
                status = action(<AOTInductorModelContainerHandle>self._handle)
        finally:
            self.leave()
        self.library.check(status, function)

    cdef require_slot_sizes(self):
        # The runtime copies each tensor's whole storage into the constant's slot
        # without a bounds check: without the sizes, refuse rather than risk
        # writing past it.
        self.library.require(<void*>self.library.fn.container_get_constant_data_size,
                             "AOTInductorModelContainerGetConstantDataSize")


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


cdef object _on_device(_HandleOwner owner):
    """A context making the model's GPU current: the runtime allocates
    constant buffers and events on the current device. A no-op on CPU."""
    return guard_for(owner._device_type, owner._device_index)


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
    buffers); ``cuda_graphs="auto"`` times plain runs against graphed calls
    for each signature after its capture and keeps the faster (read the
    choice in ``container.cuda_graphs.decisions``): see
    :mod:`aoti_cy.cuda_graphs`.

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
            load_package_weights(container, artifact)
    except BaseException:
        artifact.cleanup()
        raise
    return container


def load_package_weights(ModelContainer container, artifact):
    """Give a new container the weights its package stores outside the
    `.so` (a constants blob, or pickled tensors; ``artifact.weights()``
    hands them out); the container then owns the only copy."""
    weights = artifact.weights()
    if weights.blob is not None:
        with weights.blob as blob:
            container.update_constants_from_blob(blob)
    state = weights.state_dict()
    if state is not None:
        container.update_constant_buffer(state, validate_full_update=True)


# Model is a _HandleOwner of its own module; importable from here as before.
from aoti_cy._model import Model  # noqa: E402
