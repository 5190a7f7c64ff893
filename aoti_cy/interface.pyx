"""ModelContainer: an AOTInductor model container driven through its C ABI.

Where the Python API differs from the C ABI:
- input counts are checked before the C call (the C side throws across the
  ABI on a mismatch, which aborts the process);
- inputs are checked to live on the model's device before the C call, and
  by default against the model's own dtype/shape/stride checks (see
  ``check_inputs``);
- a failed call frees every handle the model did not take and raises
  AOTIError with the runtime's own message;
- the GIL is released around every call into the model;
- CUDA runs go on the current stream of the *model's* device by default.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_ITEMS
from libc.stdint cimport int32_t, uint64_t, uintptr_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

from collections import namedtuple

import os
import threading

import numpy
import torch

from aoti_cy.includes.abi cimport (
    AOTI_RUNTIME_FAILURE, AOTI_RUNTIME_SUCCESS, AOTIProxyExecutorHandle, AOTIRuntimeError,
    AOTInductorConstantMapEntry, AOTInductorConstantMapHandle,
    AOTInductorModelContainerHandle, AOTInductorModelHandle, AOTInductorStreamHandle,
    AtenTensorHandle, ContainerActionFn, ContainerRunFn, ContainerUpdateMapFn,
    ContainerUpdatePairsFn, InputCheckFn)
from aoti_cy.includes.bridge cimport (
    AOTI_CY_DEVICE_CPU, AOTI_CY_DEVICE_CUDA, AotiCyDevice, AotiCyRunBuffers,
    aoti_cy_accept_arrays_of, aoti_cy_drop_refs, aoti_cy_dtype_from_scalar_type,
    aoti_cy_free_handles, aoti_cy_handle_from_tensor, aoti_cy_handles_from_tensors,
    aoti_cy_list_from_handles, aoti_cy_new_handle_ref, aoti_cy_tensor_from_borrowed_handle,
    aoti_cy_tensor_from_handle)
from aoti_cy.includes.input_guards cimport (
    AotiCyInputGuards, aoti_cy_check_inputs, aoti_cy_input_guards_free,
    aoti_cy_input_guards_new)
from aoti_cy.includes.run_gate cimport (
    aoti_cy_gate_close_and_drain, aoti_cy_gate_enter, aoti_cy_gate_is_closed,
    aoti_cy_gate_leave, aoti_cy_gate_set_closed)
from aoti_cy._library cimport ModelLibrary, current_cuda_stream

from aoti_cy._library import open_library
from aoti_cy.errors import AOTIError, PackageError
from aoti_cy import _package
from aoti_cy._call import CallSpec, OUT_LEAF, OUT_TUPLE
from aoti_cy._constants import ConstantTable, unset_constants
from aoti_cy._proxy_executor import executor_for
from aoti_cy import cuda_graphs as _cuda_graphs

__all__ = ["ConstantInfo", "Model", "ModelContainer", "load"]

ConstantInfo = namedtuple(
    "ConstantInfo", "name original_fqn dtype from_folded type data_size")
ConstantInfo.__doc__ = """One constant (weight, buffer, folded value) of a model.

``name`` is the runtime's internal name, ``original_fqn`` the name in the
exported module's state dict; ``type`` and ``data_size`` (bytes) are None
where the model does not export them."""

aoti_cy_accept_arrays_of(<PyObject*>numpy.ndarray)



cdef str _decode(const char* text):
    return text.decode("utf-8", "replace") if text != NULL else ""


cdef int _raise_closed() except -1 with gil:
    raise RuntimeError("this ModelContainer is closed")


cdef void* _stream_pointer(object stream) except? NULL:
    """A raw stream from an int, a torch.cuda.Stream (or anything with a
    ``cuda_stream`` attribute), or NULL for None."""
    if stream is None:
        return NULL
    if isinstance(stream, int):
        return <void*><uintptr_t>stream
    try:
        raw = stream.cuda_stream
    except AttributeError:
        raise TypeError(
            f"stream must be a torch.cuda.Stream, an int or None, got "
            f"{type(stream).__name__}") from None
    return <void*><uintptr_t>raw


cdef object _input_sequence(object inputs, size_t expected, tuple names):
    """``inputs`` as a list or tuple of the expected length, or an exception.
    Callers then read its item array directly, running no Python code until
    the handles are made."""
    if type(inputs) is not list and type(inputs) is not tuple:
        if isinstance(inputs, torch.Tensor) or not hasattr(inputs, "__len__"):
            raise TypeError(
                f"inputs must be a list or tuple of tensors, got {type(inputs).__name__}")
        inputs = PySequence_Fast(inputs, "inputs must be a sequence of tensors")
    if <size_t>len(inputs) != expected:
        raise ValueError(f"the model takes {expected} inputs {names}, got {len(inputs)}")
    return inputs


cdef AotiCyInputGuards* _input_guards_for(
        ModelLibrary library, size_t num_inputs) except? NULL:
    """Guards running the model's own input checks, for ``check_inputs=True``
    (NULL when the model has no inputs). A library without the checks
    (stripped) is refused unless it checks its own inputs because
    AOTI_RUNTIME_CHECK_INPUTS is set."""
    cdef const InputCheckFn* checks = library.input_checks(num_inputs)
    cdef AotiCyInputGuards* guards
    if checks == NULL:
        if num_inputs == 0 or os.environ.get(
                "AOTI_RUNTIME_CHECK_INPUTS", "0")[:1] not in ("", "0"):
            return NULL   # nothing to check, or the model checks every run itself
        raise PackageError(
            f"{library.path} has no input-check functions (check_input_<i>; "
            f"was it stripped?), so wrong shapes or dtypes could not be caught. "
            f"Load it with check_inputs=False to run it unchecked, or set "
            f"AOTI_RUNTIME_CHECK_INPUTS=1 before the model first runs to use "
            f"its own, slower checks")
    guards = aoti_cy_input_guards_new(checks, num_inputs)
    if guards == NULL:
        raise MemoryError()
    return guards


cdef int _check_input_handles(
        AotiCyInputGuards* guards, AtenTensorHandle* handles, size_t n,
        tuple names) except -1 nogil:
    """Check input handles with their guards; ValueError naming the input
    that does not fit."""
    cdef char reason[512]
    cdef long failed = aoti_cy_check_inputs(guards, handles, n, reason, sizeof(reason))
    if failed >= 0:
        with gil:
            _raise_mismatch(failed, _decode(reason), names)
    return 0


cdef int _raise_mismatch(long index, str reason, tuple names) except -1:
    label = f"input {index}"
    if 0 <= index < len(names):
        label += f" ({names[index]!r})"
    raise ValueError(f"{label} does not fit the model: {reason}")


def _parse_device(device):
    """(torch.device with an index for CUDA, c10 device type, index)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cpu":
        return torch.device("cpu"), AOTI_CY_DEVICE_CPU, -1
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"the model is for {dev} but CUDA is not available here "
                f"(torch {torch.__version__}, cuda={torch.version.cuda})")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if not 0 <= index < torch.cuda.device_count():
            raise ValueError(
                f"device cuda:{index} does not exist "
                f"({torch.cuda.device_count()} CUDA devices)")
        return torch.device("cuda", index), AOTI_CY_DEVICE_CUDA, index
    raise ValueError(f"unsupported device {dev}: aoti_cy runs models on cpu and cuda")


@cython.no_gc_clear
cdef class _Gated:
    """Base of ModelContainer and Model: their library and the gate that
    lets close() wait for the calls in flight."""

    def __cinit__(self, *args, **kwargs):
        aoti_cy_gate_set_closed(&self._closed, 1)
        self._input_guards = NULL
        self._input_names = self._output_names = self._unset_constants = ()

    def __dealloc__(self):
        # After the subclass's __dealloc__: no run can be in flight.
        aoti_cy_input_guards_free(<AotiCyInputGuards*>self._input_guards)
        self._input_guards = NULL

    cdef int _check_open(self) except -1:
        if aoti_cy_gate_is_closed(&self._closed):
            _raise_closed()
        return 0

    cdef int _enter(self) except -1 nogil:
        """Pass the gate before using the handle; close() waits for _leave()."""
        if not aoti_cy_gate_enter(&self._active_runs, &self._closed):
            _raise_closed()
        return 0

    cdef void _leave(self) noexcept nogil:
        aoti_cy_gate_leave(&self._active_runs)

    cdef int _raise_weights_missing(self) except -1:
        names = list(self._unset_constants)
        shown = ", ".join(map(repr, names[:6])) + (
            f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise RuntimeError(
            f"this {type(self).__name__} has no value yet for {len(names)} "
            f"constants ({shown}): its package holds no weights; give them "
            f"first ({self._weights_hint})")

    def close(self):
        """Wait for the calls in flight, then free the handle and the
        package's extracted files. Idempotent; every later call raises."""
        with nogil:
            aoti_cy_gate_close_and_drain(&self._active_runs, &self._closed)
        package, self._package = self._package, None
        try:
            self._delete_handle()
        finally:
            if package is not None:
                package.cleanup()

    cdef int _delete_handle(self) except -1:
        """Free the C handle (once); subclasses own one each."""
        return 0

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

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()


cdef int _raise_with_executor_reason(
        ModelContainer container, AOTIRuntimeError status,
        const char* function) except -1 with gil:
    """The failed call's AOTIError with the proxy executor's reason added: the
    model reports only that a fallback op's call failed, not which op or why."""
    try:
        container.library.check(status, function)
    except AOTIError as error:
        take_error = getattr(container._proxy_executor_owner, "take_error", None)
        reason = take_error() if take_error is not None else None
        if not reason:
            raise
        raise AOTIError(error.function, f"{error.detail}; {reason}") from None
    return 0


# The container must still reach its library in __dealloc__: never let the
# collector clear `library` (and so dlclose it) before the container is freed.
@cython.no_gc_clear
cdef class ModelContainer(_Gated):
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
                 max_graphs=_cuda_graphs.DEFAULT_MAX_GRAPHS, static_outputs=False):
        if self.library is not None:
            raise RuntimeError("ModelContainer.__init__ called twice")
        if not isinstance(num_models, int) or num_models < 1:
            raise ValueError(f"num_models must be a positive int, got {num_models!r}")
        self._device, self._device_type, self._device_index = _parse_device(device)
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
        self.library = open_library(library_path)
        self._create(num_models, cubin_dir)
        # The container copied the weights embedded in the .so: let the
        # kernel drop the pages they were read from.
        self.library.release_file_pages()
        self._read_metadata()
        self._check_inputs = bool(check_inputs)
        if self._check_inputs:
            self._input_guards = _input_guards_for(self.library, self._num_inputs)
        aoti_cy_gate_set_closed(&self._closed, 0)
        self._note_active_constants()
        # ---- CUDA graphs hook (aoti_cy/cuda_graphs.py) ----
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
        free the handle and the package's extracted files. Idempotent."""
        graphs, self._graphs = self._graphs, None   # CUDA graphs hook
        if graphs is not None:
            graphs.close()
        _Gated.close(self)

    @property
    def cuda_graphs(self):
        """The :class:`aoti_cy.cuda_graphs.GraphRunner` running this model's
        calls through CUDA graphs, or None (not asked for, or not possible)."""
        return self._graphs

    cdef _create(self, size_t num_models, object cubin_dir):
        cdef ModelLibrary lib = self.library
        cdef AOTInductorModelContainerHandle handle = NULL
        cdef AOTIRuntimeError status
        cdef bytes device_str = str(self._device).encode()
        cdef bytes cubin = None if cubin_dir is None else str(cubin_dir).encode()
        cdef const char* cubin_ptr = NULL
        cdef const char* device_ptr = device_str
        cdef cbool is_cpu = self._device_type == AOTI_CY_DEVICE_CPU
        if cubin is not None:
            cubin_ptr = cubin
        if lib.fn.container_create_with_device != NULL:
            with nogil:
                status = lib.fn.container_create_with_device(
                    &handle, num_models, device_ptr, cubin_ptr)
            lib.check(status, "AOTInductorModelContainerCreateWithDevice")
        else:
            # Models older than CreateWithDevice use the current CUDA device.
            with torch.cuda.device(self._device_index if not is_cpu else -1):
                with nogil:
                    status = lib.fn.container_create(
                        &handle, num_models, is_cpu, cubin_ptr)
            lib.check(status, "AOTInductorModelContainerCreate")
        self._handle = handle

    cdef _read_metadata(self):
        cdef ModelLibrary lib = self.library
        cdef size_t i, count
        cdef const char* text = NULL
        cdef const char* text2 = NULL
        lib.check(lib.fn.container_get_num_inputs(self._handle, &count),
                  "AOTInductorModelContainerGetNumInputs")
        self._num_inputs = count
        names = []
        for i in range(count):
            lib.check(lib.fn.container_get_input_name(self._handle, i, &text),
                      "AOTInductorModelContainerGetInputName")
            names.append(_decode(text))
        self._input_names = tuple(names)
        lib.check(lib.fn.container_get_num_outputs(self._handle, &count),
                  "AOTInductorModelContainerGetNumOutputs")
        self._num_outputs = count
        names = []
        for i in range(count):
            lib.check(lib.fn.container_get_output_name(self._handle, i, &text),
                      "AOTInductorModelContainerGetOutputName")
            names.append(_decode(text))
        self._output_names = tuple(names)
        lib.check(lib.fn.container_get_call_spec(self._handle, &text, &text2),
                  "AOTInductorModelContainerGetCallSpec")
        self._call_spec = (_decode(text), _decode(text2))
        self._caller = CallSpec(self._call_spec[0], self._call_spec[1], self._num_inputs)
        self._flat_call = self._caller.error is None and self._caller.flat_inputs
        self._out_kind = getattr(self._caller, "out_kind", 0)

    def __dealloc__(self):
        # No run can be in flight: every caller holds a reference to self.
        cdef AOTInductorModelContainerHandle handle = self._handle
        self._handle = NULL
        if handle != NULL:
            with nogil:
                self.library.fn.container_delete(handle)

    # ---- lifetime -----------------------------------------------------------

    cdef int _delete_handle(self) except -1:
        cdef AOTInductorModelContainerHandle handle = self._handle
        cdef AOTIRuntimeError status
        self._handle = NULL   # taken under the GIL: one closer deletes it
        if handle != NULL:
            with nogil:
                status = self.library.fn.container_delete(handle)
            self.library.check(status, "AOTInductorModelContainerDelete")
        return 0

    # ---- description ----------------------------------------------------------

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

    def __repr__(self):
        state = "closed" if self.closed else f"{self._num_inputs} inputs, {self._num_outputs} outputs"
        return f"<aoti_cy.ModelContainer on {self._device} ({state})>"

    # ---- running ------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """Call the model as the exported module was called: the arguments
        are flattened by the package's input spec and the outputs rebuilt by
        its output spec (nested tuples, lists, dicts). numpy arrays are taken
        wherever tensors are, without copying."""
        return self._call(args, kwargs, None)

    def call_on_stream(self, stream, *args, **kwargs):
        """``model(*args, **kwargs)`` issued on ``stream`` (a
        ``torch.cuda.Stream`` or a raw pointer) instead of the current one."""
        return self._call(args, kwargs, stream)

    cdef object _call(self, tuple args, dict kwargs, object stream):
        cdef list outputs
        if self._flat_call and not kwargs:
            # The common case, without pytree: a flat tuple in, flat out.
            outputs = self._run_default(args, stream)
            if self._out_kind == OUT_TUPLE:
                return tuple(outputs)
            if self._out_kind == OUT_LEAF:
                return outputs[0]
        else:
            self._check_open()
            outputs = self._run_default(self._caller.flatten(args, kwargs), stream)
        return self._caller.unflatten(outputs)

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
        return self._run_default(inputs, stream)

    cdef list _run_default(self, object inputs, object stream):
        # ---- CUDA graphs hook: a graphed call where graphs are on ----
        cdef list outputs
        if self._graphs is not None:
            outputs = self._graphs.run(self, inputs, stream)
            if outputs is not None:
                return outputs
        return self._run(self.library.fn.container_run,
                         "AOTInductorModelContainerRun", inputs, stream)

    def run_single_threaded(self, inputs, stream=None):
        """Like :meth:`run`, without the container's locking and model pool:
        for one thread at a time only (e.g. CUDA graph capture). Needs
        AOTInductorModelContainerRunSingleThreaded in the model."""
        self._check_open()
        self.library.require(<void*>self.library.fn.container_run_single_threaded,
                             "AOTInductorModelContainerRunSingleThreaded")
        return self._run(self.library.fn.container_run_single_threaded,
                         "AOTInductorModelContainerRunSingleThreaded", inputs, stream)

    cdef list _run(self, ContainerRunFn entry, const char* function,
                   object inputs, object stream):
        cdef AotiCyRunBuffers buffers
        cdef size_t num_inputs = self._num_inputs, num_outputs = self._num_outputs
        cdef AotiCyDevice device
        cdef void* raw_stream

        if aoti_cy_gate_is_closed(&self._closed):
            _raise_closed()
        raw_stream = _stream_pointer(stream)
        if raw_stream != NULL and self._device_type != AOTI_CY_DEVICE_CUDA:
            raise ValueError("stream is only meaningful for CUDA models")
        inputs = _input_sequence(inputs, num_inputs, self._input_names)
        buffers.reserve(num_inputs, num_outputs)
        device.type = self._device_type
        device.index = self._device_index
        aoti_cy_handles_from_tensors(
            PySequence_Fast_ITEMS(inputs), num_inputs, buffers.inputs, device,
            <PyObject*>self._input_names, buffers.keepalive)
        try:
            with nogil:
                self._invoke(entry, function, buffers.inputs, num_inputs,
                             buffers.outputs, num_outputs, raw_stream)
        finally:
            # Dropped here, with the GIL: see aoti_cy_handles_from_tensors.
            aoti_cy_drop_refs(buffers.keepalive, num_inputs)
        return aoti_cy_list_from_handles(buffers.outputs, num_outputs)

    cdef int run_handles(
            self, AtenTensorHandle* inputs, size_t num_inputs,
            AtenTensorHandle* outputs, size_t num_outputs,
            void* stream) except -1 nogil:
        """Run on raw handles; callable without the GIL.

        Inputs are checked as in :meth:`run` when the container checks
        inputs (a mismatch raises ValueError, taking the GIL to do so). The
        ``num_inputs`` input handles are consumed, also on failure, and
        their slots left NULL. On
        success ``outputs[0:num_outputs]`` hold new handles owned by the
        caller (a NULL one stands for no tensor). ``stream`` NULL means the
        current stream of the model's device (ignored on CPU).
        """
        return self._invoke(self.library.fn.container_run,
                            "AOTInductorModelContainerRun",
                            inputs, num_inputs, outputs, num_outputs, stream)

    cdef int _invoke(
            self, ContainerRunFn entry, const char* function,
            AtenTensorHandle* inputs, size_t num_inputs,
            AtenTensorHandle* outputs, size_t num_outputs,
            void* stream) except -1 nogil:
        cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
        cdef bint called = False
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
                with gil:
                    self._raise_weights_missing()
            if self._input_guards != NULL:
                _check_input_handles(<AotiCyInputGuards*>self._input_guards, inputs,
                                     num_inputs, self._input_names)
            if stream == NULL and self._device_type == AOTI_CY_DEVICE_CUDA:
                current_cuda_stream(self._device_index, &stream)
            self._enter()
            status = entry(self._handle, inputs, num_inputs, outputs, num_outputs,
                           <AOTInductorStreamHandle>stream,
                           <AOTIProxyExecutorHandle>self._proxy_executor)
            self._leave()
            called = True
            if (status == AOTI_RUNTIME_SUCCESS and self._proxy_executor != NULL
                    and self._executor_failed(self._proxy_executor)):
                # A fallback op failed and the model went on regardless.
                status = AOTI_RUNTIME_FAILURE
        finally:
            if status != AOTI_RUNTIME_SUCCESS:
                # The model nulls each input handle it takes; free the rest.
                aoti_cy_free_handles(inputs, num_inputs)
                aoti_cy_free_handles(outputs, num_outputs)
        if called:
            if status != AOTI_RUNTIME_SUCCESS and self._proxy_executor != NULL:
                _raise_with_executor_reason(self, status, function)
            self.library.check(status, function)
        return 0


    # ---- constants ------------------------------------------------------------

    cdef _read_constants(self):
        self._enter()
        try:
            self._constants = self._read_constants_entered(self.library)
        finally:
            self._leave()

    cdef tuple _read_constants_entered(self, ModelLibrary lib):
        cdef size_t i, count, data_size
        cdef const char* name = NULL
        cdef const char* fqn = NULL
        cdef cbool from_folded
        cdef int32_t dtype, kind
        lib.check(lib.fn.container_get_num_constants(self._handle, &count),
                  "AOTInductorModelContainerGetNumConstants")
        infos = []
        for i in range(count):
            lib.check(lib.fn.container_get_constant_name(self._handle, i, &name),
                      "AOTInductorModelContainerGetConstantName")
            lib.check(lib.fn.container_get_constant_original_fqn(self._handle, i, &fqn),
                      "AOTInductorModelContainerGetConstantOriginalFQN")
            lib.check(lib.fn.container_get_constant_from_folded(self._handle, i, &from_folded),
                      "AOTInductorModelContainerGetConstantFromFolded")
            lib.check(lib.fn.container_get_constant_dtype(self._handle, i, &dtype),
                      "AOTInductorModelContainerGetConstantDtype")
            kind_value = size_value = None
            if lib.fn.container_get_constant_type != NULL:
                lib.check(lib.fn.container_get_constant_type(self._handle, i, &kind),
                          "AOTInductorModelContainerGetConstantType")
                kind_value = kind
            if lib.fn.container_get_constant_data_size != NULL:
                lib.check(lib.fn.container_get_constant_data_size(self._handle, i, &data_size),
                          "AOTInductorModelContainerGetConstantDataSize")
                size_value = data_size
            infos.append(ConstantInfo(
                _decode(name), _decode(fqn), aoti_cy_dtype_from_scalar_type(dtype),
                bool(from_folded), kind_value, size_value))
        return tuple(infos)

    @property
    def constants(self):
        """A ConstantInfo per constant of the model, in the runtime's order."""
        self._check_open()
        if self._constants is None:
            self._read_constants()
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
        self._check_open()
        # The runtime copies each tensor's whole storage into the constant's
        # slot without a bounds check: without the sizes, refuse rather than
        # risk writing past it.
        self.library.require(<void*>self.library.fn.container_get_constant_data_size,
                             "AOTInductorModelContainerGetConstantDataSize")
        table = self._constant_table()
        values, unknown = table.check(mapping, uncopied=user_managed)
        if unknown:
            raise ValueError(f"unknown constants {unknown}; the model's constants "
                             f"are {sorted(c.original_fqn for c in self.constants)}")
        if validate_full_update:
            missing = table.unset(values)
            if missing:
                raise ValueError(f"validate_full_update: no value for {missing}")
        self._update_constants(values, use_inactive, validate_full_update, user_managed)
        if not use_inactive:
            self._note_active_constants()

    def update_inactive_constant_buffer(self, mapping):
        """Fill the inactive buffer with every constant (as the C ABI's
        UpdateInactiveConstantBuffer: a full update is required)."""
        self.update_constant_buffer(mapping, use_inactive=True, validate_full_update=True)

    cdef _update_constants(self, dict values, bint use_inactive, bint validate,
                           bint user_managed):
        cdef ModelLibrary lib = self.library
        cdef vector[AOTInductorConstantMapEntry] pairs
        cdef unordered_map[string, AtenTensorHandle] constant_map
        cdef AOTIRuntimeError status
        cdef size_t i, count = len(values)
        cdef cbool inactive = use_inactive, full = validate
        cdef ContainerUpdatePairsFn pairs_entry
        cdef ContainerUpdateMapFn map_entry
        from_cpu = (self._device_type != AOTI_CY_DEVICE_CPU
                    and any(t.device.type == "cpu" for t in values.values()))
        if user_managed and from_cpu:
            raise ValueError("user_managed constants must be on the model's device "
                             f"({self._device}); CPU tensors can only be copied")
        if (from_cpu and lib.fn.container_update_constant_buffer_from_cpu_pairs == NULL
                and lib.fn.container_update_constant_buffer_from_cpu == NULL):
            # Models from before the FromCpu entry points: copy them over here.
            values = {k: t.to(self._device) for k, t in values.items()}
            from_cpu = False
        if user_managed:
            pairs_entry = lib.fn.container_update_user_managed_constant_buffer_pairs
            map_entry = lib.fn.container_update_user_managed_constant_buffer
            names = ("AOTInductorModelContainerUpdateUserManagedConstantBufferPairs",
                     "AOTInductorModelContainerUpdateUserManagedConstantBuffer")
        elif from_cpu:
            pairs_entry = lib.fn.container_update_constant_buffer_from_cpu_pairs
            map_entry = lib.fn.container_update_constant_buffer_from_cpu
            names = ("AOTInductorModelContainerUpdateConstantBufferFromCpuPairs",
                     "AOTInductorModelContainerUpdateConstantBufferFromCpu")
        else:
            pairs_entry = lib.fn.container_update_constant_buffer_pairs
            map_entry = lib.fn.container_update_constant_buffer
            names = ("AOTInductorModelContainerUpdateConstantBufferPairs",
                     "AOTInductorModelContainerUpdateConstantBuffer")
        if pairs_entry == NULL:
            lib.require(<void*>map_entry, names[1].encode())
        pairs.resize(count)
        encoded = [name.encode() for name in values]
        self._enter()
        try:
            for i, tensor in enumerate(values.values()):
                pairs[i].name = <const char*>(<bytes>encoded[i])
                pairs[i].handle = aoti_cy_handle_from_tensor(tensor)
            if pairs_entry != NULL:
                with nogil:
                    status = pairs_entry(self._handle, pairs.data(), count, inactive, full)
                lib.check(status, names[0].encode())
            else:
                # Older models take a std::unordered_map; this assumes the
                # model was built with the same C++ ABI as this extension.
                for i in range(count):
                    constant_map[string(pairs[i].name)] = pairs[i].handle
                with nogil:
                    status = map_entry(self._handle,
                                       <AOTInductorConstantMapHandle>&constant_map,
                                       inactive, full)
                lib.check(status, names[1].encode())
        finally:
            self._leave()
            # Copies and user-managed entries both take their own reference.
            for i in range(count):
                aoti_cy_free_handles(&pairs[i].handle, 1)

    cdef object _constant_table(self):
        """The ConstantTable that checks values for this container."""
        return ConstantTable(self.constants, self._constant_shapes(), self._device)

    cdef dict _constant_shapes(self):
        """Internal name -> shape of each constant that has a value in the
        active buffer ({} where the model cannot say); kept once complete."""
        if self._shapes is not None:
            return self._shapes
        if (self.library.fn.container_extract_constants_map_entries == NULL
                and self.library.fn.container_extract_constants_map == NULL):
            return {}
        fqn_to_name = self.constant_fqns
        shapes = {fqn_to_name[fqn]: tuple(t.shape) for fqn, t in
                  self._extract(False, copy=False).items()}
        if not unset_constants(self.constants, shapes):
            self._shapes = shapes
        return shapes

    cdef _note_active_constants(self):
        """Record which constants still have no value in the active buffer
        (a package compiled without its weights): runs refuse until they do,
        since the model would read through null pointers."""
        if self._graphs is not None:   # CUDA graphs hook: they read the old buffers
            self._graphs.invalidate()
        if (self.library.fn.container_extract_constants_map_entries == NULL
                and self.library.fn.container_extract_constants_map == NULL):
            return
        present = {self.constant_fqns[fqn] for fqn in self._extract(False, copy=False)}
        unset = unset_constants(self.constants, present)
        self._unset_constants = tuple(unset)
        self._weights_missing = bool(unset)

    def extract_constants_map(self, *, use_inactive=False):
        """Original FQN -> a copy of each constant that is not folded, from the
        active (or inactive) buffer. Copies, because the buffer's memory is
        reused by later updates."""
        self._check_open()
        return self._extract(use_inactive, copy=True)

    cdef dict _extract(self, bint use_inactive, bint copy):
        cdef ModelLibrary lib = self.library
        cdef const AOTInductorConstantMapEntry* entries = NULL
        cdef size_t i, count = 0
        cdef unordered_map[string, AtenTensorHandle] constant_map
        cdef cbool inactive = use_inactive
        cdef AOTIRuntimeError status
        result = {}
        self._enter()
        # The entries live in the container until its next extract: one at a time.
        self._extract_lock.acquire()
        try:
            if lib.fn.container_extract_constants_map_entries != NULL:
                with nogil:
                    status = lib.fn.container_extract_constants_map_entries(
                        self._handle, &entries, &count, inactive)
                lib.check(status, "AOTInductorModelContainerExtractConstantsMapEntries")
                # The entries are the container's own until its next call.
                for i in range(count):
                    result[_decode(entries[i].name)] = aoti_cy_tensor_from_borrowed_handle(
                        entries[i].handle)
            else:
                lib.require(<void*>lib.fn.container_extract_constants_map,
                            "AOTInductorModelContainerExtractConstantsMap")
                with nogil:
                    status = lib.fn.container_extract_constants_map(
                        self._handle, <AOTInductorConstantMapHandle>&constant_map,
                        inactive)
                lib.check(status, "AOTInductorModelContainerExtractConstantsMap")
                for item in constant_map:
                    result[item.first.decode("utf-8", "replace")] = \
                        aoti_cy_tensor_from_borrowed_handle(item.second)
            if copy:
                result = {k: t.clone() for k, t in result.items()}
        finally:
            self._extract_lock.release()
            self._leave()
        return result

    def run_constant_folding(self, *, use_inactive=False, stream=None):
        """Recompute the folded constants from the active (or inactive) buffer."""
        cdef ModelLibrary lib = self.library
        cdef AOTIRuntimeError status
        cdef cbool inactive = use_inactive
        cdef void* raw_stream = _stream_pointer(stream)
        self._check_open()
        self._enter()
        try:
            if raw_stream == NULL and self._device_type == AOTI_CY_DEVICE_CUDA:
                current_cuda_stream(self._device_index, &raw_stream)
            with nogil:
                status = lib.fn.container_run_constant_folding(
                    self._handle, inactive, <AOTInductorStreamHandle>raw_stream,
                    <AOTIProxyExecutorHandle>self._proxy_executor)
                if (status == AOTI_RUNTIME_SUCCESS and self._proxy_executor != NULL
                        and self._executor_failed(self._proxy_executor)):
                    status = AOTI_RUNTIME_FAILURE   # as in _invoke
        finally:
            self._leave()
        if status != AOTI_RUNTIME_SUCCESS and self._proxy_executor != NULL:
            _raise_with_executor_reason(
                self, status, "AOTInductorModelContainerRunConstantFolding")
        lib.check(status, "AOTInductorModelContainerRunConstantFolding")
        if not use_inactive and self._graphs is not None:   # CUDA graphs hook
            self._graphs.invalidate()

    def swap_constant_buffer(self):
        """Make the inactive buffer the active one. Waits for runs in flight,
        which finish on the old constants; later runs see the new ones."""
        self._buffer_action(self.library.fn.container_swap_constant_buffer,
                            "AOTInductorModelContainerSwapConstantBuffer")
        self._note_active_constants()

    def free_inactive_constant_buffer(self):
        """Release the inactive buffer's memory."""
        self._buffer_action(self.library.fn.container_free_inactive_constant_buffer,
                            "AOTInductorModelContainerFreeInactiveConstantBuffer")

    cdef _buffer_action(self, ContainerActionFn entry, const char* function):
        cdef AOTIRuntimeError status
        self._check_open()
        self.library.require(<void*>entry, function)
        self._enter()
        try:
            with nogil:
                status = entry(self._handle)
        finally:
            self._leave()
        self.library.check(status, function)

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
        self._check_open()
        with self._weights_lock:
            table = self._constant_table()
            values, problems = table.match_state_dict(state_dict)
            if strict and problems:
                raise ValueError("load_weights(strict=True) changed nothing: "
                                 + "; ".join(problems))
            missing = table.unset(values)
            if missing:
                # Kept at their current values (copied: the swap reuses memory).
                fqn_to_name = self.constant_fqns
                current = self._extract(False, copy=True)
                unset = [fqn for fqn in missing if fqn not in current]
                if unset:
                    raise ValueError(
                        f"load_weights: constants {unset} have no value yet (the "
                        f"package holds no weights for them): give them too "
                        f"(non-persistent buffers are not in a state_dict(): add "
                        f"them, e.g. dict(module.state_dict(), **dict(module.named_buffers())))")
                for fqn in missing:
                    values[fqn_to_name[fqn]] = current[fqn]
            self.library.require(<void*>self.library.fn.container_get_constant_data_size,
                                 "AOTInductorModelContainerGetConstantDataSize")
            self._update_constants(values, True, True, False)
            if any(c.from_folded for c in self.constants):
                self.run_constant_folding(use_inactive=True)
            self.swap_constant_buffer()   # notes the active constants too

    @property
    def constants_blob_size(self):
        """Bytes of the constants blob (the layout of a package's ``.blob``)."""
        cdef ModelLibrary lib = self.library
        cdef uint64_t size = 0
        self._check_open()
        lib.require(<void*>lib.fn.container_get_constants_blob_size,
                    "AOTInductorModelContainerGetConstantsBlobSize")
        self._enter()
        try:
            lib.check(lib.fn.container_get_constants_blob_size(self._handle, &size),
                      "AOTInductorModelContainerGetConstantsBlobSize")
        finally:
            self._leave()
        return size

    def update_constants_from_blob(self, const unsigned char[::1] buffer):
        """Load every constant from one buffer laid out as the model's
        constants blob (e.g. an mmap of a package's ``.blob``). Only models
        built to read external weights (``binary_blob`` packages) use it, and
        only once per container: :func:`load` already does it for such
        packages. The runtime copies the data."""
        cdef ModelLibrary lib = self.library
        cdef AOTIRuntimeError status
        cdef const unsigned char* data = NULL
        self._check_open()
        if self._blob_loaded:
            raise RuntimeError(
                "this container already loaded a constants blob; the runtime "
                "would leave constants pointing at freed memory if it loaded another")
        lib.require(<void*>lib.fn.model_update_constants_from_blob,
                    "AOTInductorModelUpdateConstantsFromBlob")
        expected = self.constants_blob_size
        if <uint64_t>buffer.shape[0] < expected:
            raise ValueError(f"constants blob has {buffer.shape[0]} bytes, the "
                             f"model needs {expected}")
        if buffer.shape[0]:
            data = &buffer[0]
        self._enter()
        try:
            with nogil:
                status = lib.fn.model_update_constants_from_blob(self._handle, data)
        finally:
            self._leave()
        self._blob_loaded = True
        lib.check(status, "AOTInductorModelUpdateConstantsFromBlob")
        self._note_active_constants()


cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL:
    """A new handle referring to ``tensor``'s storage (a numpy array is
    viewed as a CPU tensor); raises TypeError for anything else."""
    return aoti_cy_handle_from_tensor(tensor)


cdef object tensor_from_handle(AtenTensorHandle handle):
    """The tensor a handle refers to, stealing the handle (None for NULL)."""
    return aoti_cy_tensor_from_handle(handle)


cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil:
    """A new handle to the same tensor (no data copied; NULL when out of
    memory): how nogil code makes a fresh input handle for every run."""
    return aoti_cy_new_handle_ref(handle)


cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil:
    """Free every non-NULL handle (a repeated one once) and NULL the slots."""
    aoti_cy_free_handles(handles, count)


def load(path, *, device=None, num_models=1, model_name="model", check_inputs=True,
         cuda_graphs=False, max_graphs=_cuda_graphs.DEFAULT_MAX_GRAPHS,
         static_outputs=False):
    """Load an AOTInductor artifact and return a :class:`ModelContainer`.

    ``path`` is a `.pt2` package (from ``aoti_compile_and_package``), an
    extracted package directory, or a bare model `.so`. ``device=None`` means
    the device the model was compiled for. ``model_name`` picks one model of
    a package that holds several. ``check_inputs`` is as for
    :class:`ModelContainer`. ``cuda_graphs=True`` runs calls through CUDA
    graphs captured per input signature (at most ``max_graphs`` per model
    instance; ``static_outputs=True`` returns the graphs' own output
    buffers): see :mod:`aoti_cy.cuda_graphs`.
    """
    cdef ModelContainer container
    artifact = _package.open_artifact(path, model_name)
    try:
        if device is None:
            device = artifact.device
        container = ModelContainer(
            artifact.library_path, device=device, num_models=num_models,
            cubin_dir=artifact.cubin_dir, check_inputs=check_inputs,
            proxy_executor=executor_for(artifact.library_path, device),
            cuda_graphs=cuda_graphs, max_graphs=max_graphs, static_outputs=static_outputs)
        container._package = artifact
        artifact.load_weights_into(container)
    except BaseException:
        artifact.cleanup()
        raise
    return container


@cython.no_gc_clear
cdef class Model(_Gated):
    """One AOTInductor model instance (``AOTInductorModel*``), without the
    container's pool, locking or constant buffers: the C ABI's bare-metal
    path, for CPU models.

    ``Model(path, constants=None, *, model_name="model", check_inputs=True)``
    takes what :func:`load` takes (a `.pt2`, an extracted package directory
    or a model `.so`) and uses the package's weights, or ``constants``
    (original FQN or internal name -> CPU tensor, every constant) instead.
    A package without weights refuses to run until
    :meth:`update_constants_map` gives them. Runs are
    serialised: one instance runs one call at a time (use a container for
    concurrency). ``check_inputs`` is as for :class:`ModelContainer`.
    """

    def __cinit__(self, *args, **kwargs):
        self._handle = NULL
        self._lock = threading.Lock()

    def __init__(self, path, constants=None, *, model_name="model", check_inputs=True):
        cdef AOTInductorModelHandle handle = NULL
        cdef AOTIRuntimeError status
        cdef ModelLibrary lib
        cdef ModelContainer probe
        if self.library is not None:
            raise RuntimeError("Model.__init__ called twice")
        artifact = _package.open_artifact(path, model_name)
        try:
            if executor_for(artifact.library_path, "cpu") is not None:
                raise PackageError(
                    f"{path} calls fallback ops through a proxy executor, which the "
                    f"single-instance AOTInductorModelRun cannot take: load it with "
                    f"aoti_cy.load() instead")
            # The single-instance ABI cannot describe the model: read its
            # inputs, outputs and constants from a short-lived container of
            # the same .so, which also reads weights stored outside it.
            probe = ModelContainer(artifact.library_path, device="cpu", check_inputs=False)
            with probe:
                artifact.load_weights_into(probe)
                self._input_names = probe.input_names
                self._output_names = probe.output_names
                self._constants = probe.constants
                self._table = probe._constant_table()
                values = None
                if constants is not None:
                    values, unknown = self._table.check(constants)
                    missing = self._table.unset(values)
                    if unknown or missing:
                        raise ValueError(
                            f"constants: unknown keys {unknown}, missing {missing}")
                elif artifact.stores_weights_outside_library:
                    values = probe._extract(False, copy=True)
                    if len(values) < len(self._table.unset({})):
                        values = None   # a package without its weights
                self._unset_constants = () if values else probe._unset_constants
                self._weights_missing = bool(self._unset_constants)
                self._weights_hint = "with update_constants_map()"
        except BaseException:
            artifact.cleanup()
            raise
        self._package = artifact
        self.library = lib = probe.library
        self._num_inputs = len(self._input_names)
        self._num_outputs = len(self._output_names)
        self._check_inputs = bool(check_inputs)
        if self._check_inputs:
            self._input_guards = _input_guards_for(lib, self._num_inputs)
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
        cdef AOTInductorModelHandle handle = self._handle
        self._handle = NULL
        if handle != NULL:
            with nogil:
                self.library.fn.model_delete(handle)

    cdef int _delete_handle(self) except -1:
        cdef AOTInductorModelHandle handle = self._handle
        cdef AOTIRuntimeError status
        self._handle = NULL   # taken under the GIL: one closer deletes it
        if handle != NULL:
            with nogil:
                status = self.library.fn.model_delete(handle)
            self.library.check(status, "AOTInductorModelDelete")
        return 0

    @property
    def num_outputs(self):
        """How many tensors :meth:`run` returns (from AOTInductorModelGetNumOutputs)."""
        cdef size_t count = 0
        self._enter()   # close() on another thread waits for this call
        try:
            self.library.check(self.library.fn.model_get_num_outputs(self._handle, &count),
                               "AOTInductorModelGetNumOutputs")
        finally:
            self._leave()
        return count

    @property
    def constants(self):
        """A ConstantInfo per constant (as the container reports them)."""
        return self._constants

    def __repr__(self):
        state = "closed" if self.closed else f"{self._num_inputs} inputs, {self._num_outputs} outputs"
        return f"<aoti_cy.Model ({state})>"

    def run(self, inputs):
        """Run on a list (or tuple) of CPU tensors; return a list of tensors."""
        cdef AotiCyRunBuffers buffers
        cdef size_t num_inputs = self._num_inputs, num_outputs = self._num_outputs
        cdef AotiCyDevice device
        cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
        cdef bint entered = False
        self._check_open()
        if self._weights_missing:
            self._raise_weights_missing()
        inputs = _input_sequence(inputs, num_inputs, self._input_names)
        buffers.reserve(num_inputs, num_outputs)
        device.type = AOTI_CY_DEVICE_CPU
        device.index = -1
        aoti_cy_handles_from_tensors(PySequence_Fast_ITEMS(inputs), num_inputs,
                                     buffers.inputs, device, <PyObject*>self._input_names,
                                     buffers.keepalive)
        try:
            if self._input_guards != NULL:
                with nogil:
                    _check_input_handles(<AotiCyInputGuards*>self._input_guards,
                                         buffers.inputs, num_inputs, self._input_names)
            with self._lock:   # one instance, one run at a time
                with nogil:
                    entered = aoti_cy_gate_enter(&self._active_runs, &self._closed)
                    if entered:
                        status = self.library.fn.model_run(
                            self._handle, buffers.inputs, buffers.outputs)
                        aoti_cy_gate_leave(&self._active_runs)
        finally:
            aoti_cy_drop_refs(buffers.keepalive, num_inputs)   # with the GIL, as in _run
            if status != AOTI_RUNTIME_SUCCESS:
                aoti_cy_free_handles(buffers.inputs, num_inputs)
                aoti_cy_free_handles(buffers.outputs, num_outputs)
        if status != AOTI_RUNTIME_SUCCESS:
            if not entered:
                _raise_closed()
            self.library.check(status, "AOTInductorModelRun")
        return aoti_cy_list_from_handles(buffers.outputs, num_outputs)

    def update_constants_map(self, mapping):
        """Replace the model's constants (original FQN or internal name ->
        CPU tensor, every constant). Not concurrent with :meth:`run`."""
        cdef ModelLibrary lib = self.library
        cdef vector[AOTInductorConstantMapEntry] pairs
        cdef unordered_map[string, AtenTensorHandle] constant_map
        cdef AOTIRuntimeError status
        cdef size_t i, count
        self._check_open()
        # The model keeps these tensors as they are (no copy into slots).
        values, unknown = self._table.check(mapping, uncopied=True)
        missing = self._table.unset(values)
        if unknown or missing:
            raise ValueError(f"update_constants_map: unknown keys {unknown}, "
                             f"missing {missing}")
        count = len(values)
        pairs.resize(count)
        encoded = [name.encode() for name in values]
        # close() on another thread waits for the gate.
        self._enter()
        try:
            # The model takes ownership of the handles.
            for i, tensor in enumerate(values.values()):
                pairs[i].name = <const char*>(<bytes>encoded[i])
                pairs[i].handle = aoti_cy_handle_from_tensor(tensor)
            with self._lock:
                if lib.fn.model_update_constants_map_v2 != NULL:
                    with nogil:
                        status = lib.fn.model_update_constants_map_v2(
                            self._handle, pairs.data(), <int32_t>count)
                    lib.check(status, "AOTInductorModelUpdateConstantsMapV2")
                else:
                    for i in range(count):
                        constant_map[string(pairs[i].name)] = pairs[i].handle
                    with nogil:
                        status = lib.fn.model_update_constants_map(
                            self._handle, <AOTInductorConstantMapHandle>&constant_map)
                    lib.check(status, "AOTInductorModelUpdateConstantsMap")
                self._unset_constants = ()
                self._weights_missing = False
        finally:
            self._leave()
