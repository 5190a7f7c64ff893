"""ModelContainer: an AOTInductor model container driven through its C ABI.

Where the Python API differs from the C ABI:
- input counts are checked before the C call (the C side throws across the
  ABI on a mismatch, which aborts the process);
- inputs are checked to live on the model's device before the C call;
- a failed call frees every handle the model did not take and raises
  AOTIError with the runtime's own message;
- the GIL is released around every call into the model;
- CUDA runs go on the current stream of the *model's* device by default.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_ITEMS
from cpython.list cimport PyList_GET_SIZE
from libc.stdint cimport int32_t, uint64_t, uintptr_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

from collections import namedtuple

import numpy
import torch

from aoti_cy.includes.abi cimport *
from aoti_cy.includes.bridge cimport *
from aoti_cy.includes.run_gate cimport *
from aoti_cy._library cimport ModelLibrary, current_cuda_stream

from aoti_cy._library import open_library
from aoti_cy.errors import PackageError
from aoti_cy import _package
from aoti_cy._call import CallSpec, OUT_LEAF, OUT_TUPLE

__all__ = ["ConstantInfo", "ModelContainer", "load"]

ConstantInfo = namedtuple(
    "ConstantInfo", "name original_fqn dtype from_folded type data_size")
ConstantInfo.__doc__ = """One constant (weight, buffer, folded value) of a model.

``name`` is the runtime's internal name, ``original_fqn`` the name in the
exported module's state dict; ``type`` and ``data_size`` (bytes) are None
where the model does not export them."""

aoti_cy_accept_arrays_of(<PyObject*>numpy.ndarray)

# Runs with at most this many inputs (outputs) keep their handles on the stack.
DEF STACK_HANDLES = 16


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


# The container must still reach its library in __dealloc__: never let the
# collector clear `library` (and so dlclose it) before the container is freed.
@cython.no_gc_clear
cdef class ModelContainer:
    """An AOTInductor model container created from a model `.so`.

    ``ModelContainer(path, device="cpu", num_models=1, cubin_dir=None)``
    loads the model library at ``path`` (opened once per file) and creates a
    container of ``num_models`` model instances, so that up to that many runs
    proceed concurrently. Prefer :func:`aoti_cy.load` for `.pt2` packages.

    Thread safety: ``run`` may be called from any number of threads at once;
    ``close`` waits for runs and constant updates in flight and makes later
    calls raise. Updating the *active* constants while other threads run the
    model is not safe (the runtime frees the old values under them): update
    the inactive buffer and swap instead.
    """

    def __cinit__(self, *args, **kwargs):
        self._handle = NULL
        aoti_cy_gate_set_closed(&self._closed, 1)

    def __init__(self, library_path, device="cpu", num_models=1, cubin_dir=None):
        if self.library is not None:
            raise RuntimeError("ModelContainer.__init__ called twice")
        if not isinstance(num_models, int) or num_models < 1:
            raise ValueError(f"num_models must be a positive int, got {num_models!r}")
        self._device, self._device_type, self._device_index = _parse_device(device)
        self.library = open_library(library_path)
        self._create(num_models, cubin_dir)
        self._read_metadata()
        aoti_cy_gate_set_closed(&self._closed, 0)

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

    def close(self):
        """Wait for runs in flight, then free the container and its package
        files. Idempotent; every later call on this container raises."""
        cdef AOTInductorModelContainerHandle handle
        with nogil:
            aoti_cy_gate_close_and_drain(&self._active_runs, &self._closed)
        handle = self._handle   # taken under the GIL: one closer deletes it
        self._handle = NULL
        package, self._package = self._package, None
        try:
            if handle != NULL:
                with nogil:
                    status = self.library.fn.container_delete(handle)
                self.library.check(status, "AOTInductorModelContainerDelete")
        finally:
            if package is not None:
                package.cleanup()

    @property
    def closed(self):
        """True once :meth:`close` has been called (or creation failed)."""
        return bool(aoti_cy_gate_is_closed(&self._closed))

    def __enter__(self):
        if aoti_cy_gate_is_closed(&self._closed):
            _raise_closed()
        return self

    def __exit__(self, *exc_info):
        self.close()

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
    def input_names(self):
        """The model's input names, in call order (tuple of str)."""
        return self._input_names

    @property
    def output_names(self):
        """The model's output names, in return order (tuple of str)."""
        return self._output_names

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
        cdef list outputs
        if self._flat_call and not kwargs:
            # The common case, without pytree: a flat tuple in, flat out.
            outputs = self._run(self.library.fn.container_run,
                                "AOTInductorModelContainerRun", args, None)
            if self._out_kind == OUT_TUPLE:
                return tuple(outputs)
            if self._out_kind == OUT_LEAF:
                return outputs[0]
            return self._caller.unflatten(outputs)
        self._check_open()
        outputs = self._run(self.library.fn.container_run,
                            "AOTInductorModelContainerRun",
                            self._caller.flatten(args, kwargs), None)
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
        GIL is released while the model runs.
        """
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
        cdef AtenTensorHandle input_stack[STACK_HANDLES]
        cdef AtenTensorHandle output_stack[STACK_HANDLES]
        cdef vector[AtenTensorHandle] input_heap, output_heap
        cdef AtenTensorHandle* input_handles = input_stack
        cdef AtenTensorHandle* output_handles = output_stack
        cdef size_t num_inputs, num_outputs = self._num_outputs
        cdef AotiCyDevice device
        cdef void* raw_stream

        if aoti_cy_gate_is_closed(&self._closed):
            _raise_closed()
        raw_stream = _stream_pointer(stream)
        if raw_stream != NULL and self._device_type != AOTI_CY_DEVICE_CUDA:
            raise ValueError("stream is only meaningful for CUDA models")
        # No Python code may run from here until the handles are made: the
        # item array of a list is read directly.
        if type(inputs) is not list and type(inputs) is not tuple:
            if isinstance(inputs, torch.Tensor) or not hasattr(inputs, "__len__"):
                raise TypeError(
                    f"inputs must be a list or tuple of tensors, got "
                    f"{type(inputs).__name__}")
            inputs = PySequence_Fast(inputs, "inputs must be a sequence of tensors")
        num_inputs = len(inputs)
        if num_inputs != self._num_inputs:
            raise ValueError(
                f"the model takes {self._num_inputs} inputs {self._input_names}, "
                f"got {num_inputs}")
        if num_inputs > STACK_HANDLES:
            input_heap.resize(num_inputs)
            input_handles = input_heap.data()
        if num_outputs > STACK_HANDLES:
            output_heap.resize(num_outputs)
            output_handles = output_heap.data()
        device.type = self._device_type
        device.index = self._device_index
        aoti_cy_handles_from_tensors(
            PySequence_Fast_ITEMS(inputs), num_inputs, input_handles, device,
            <PyObject*>self._input_names)
        with nogil:
            self._invoke(entry, function, input_handles, num_inputs,
                         output_handles, num_outputs, raw_stream)
        return aoti_cy_list_from_handles(output_handles, num_outputs)

    cdef int run_handles(
            self, AtenTensorHandle* inputs, size_t num_inputs,
            AtenTensorHandle* outputs, size_t num_outputs,
            void* stream) except -1 nogil:
        """Run on raw handles; callable without the GIL.

        The ``num_inputs`` input handles are consumed, also on failure, and
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
            if stream == NULL and self._device_type == AOTI_CY_DEVICE_CUDA:
                current_cuda_stream(self._device_index, &stream)
            self._enter()
            status = entry(self._handle, inputs, num_inputs, outputs, num_outputs,
                           <AOTInductorStreamHandle>stream, NULL)
            self._leave()
            called = True
        finally:
            if status != AOTI_RUNTIME_SUCCESS:
                # The model nulls each input handle it takes; free the rest.
                aoti_cy_free_handles(inputs, num_inputs)
                aoti_cy_free_handles(outputs, num_outputs)
        if called:
            self.library.check(status, function)
        return 0


    # ---- constants ------------------------------------------------------------

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
                               validate_full_update=False):
        """Copy new values into the model's constants.

        ``mapping`` maps original FQNs or internal names to tensors on the
        model's device with the constant's dtype and size. With
        ``use_inactive`` the inactive buffer is filled instead of the one in
        use; ``validate_full_update`` demands a value for every constant that
        is not folded. Bad keys, dtypes and sizes are rejected, naming them,
        before anything changes.
        """
        cdef ModelLibrary lib = self.library
        cdef vector[AOTInductorConstantMapEntry] pairs
        cdef unordered_map[string, AtenTensorHandle] constant_map
        cdef AOTIRuntimeError status
        cdef size_t i, count
        cdef cbool inactive = use_inactive, full = validate_full_update
        self._check_open()
        # The runtime copies each tensor's whole storage into the constant's
        # slot without a bounds check: without the sizes, refuse rather than
        # risk writing past it.
        lib.require(<void*>lib.fn.container_get_constant_data_size,
                    "AOTInductorModelContainerGetConstantDataSize")
        values = self._constant_values(mapping)
        count = len(values)
        pairs.resize(count)
        names = [name.encode() for name in values]
        self._enter()
        try:
            for i, tensor in enumerate(values.values()):
                pairs[i].name = <const char*>(<bytes>names[i])
                pairs[i].handle = aoti_cy_handle_from_tensor(tensor)
            if lib.fn.container_update_constant_buffer_pairs != NULL:
                with nogil:
                    status = lib.fn.container_update_constant_buffer_pairs(
                        self._handle, pairs.data(), count, inactive, full)
                lib.check(status, "AOTInductorModelContainerUpdateConstantBufferPairs")
            else:
                # Older models take a std::unordered_map; this assumes the
                # model was built with the same C++ ABI as this extension.
                for i in range(count):
                    constant_map[string(pairs[i].name)] = pairs[i].handle
                with nogil:
                    status = lib.fn.container_update_constant_buffer(
                        self._handle, <AOTInductorConstantMapHandle>&constant_map,
                        inactive, full)
                lib.check(status, "AOTInductorModelContainerUpdateConstantBuffer")
        finally:
            self._leave()
            # The container copied the data; the handles were only borrowed.
            for i in range(count):
                aoti_cy_free_handles(&pairs[i].handle, 1)

    cdef dict _constant_values(self, object mapping):
        """Internal name -> compact tensor, after checking keys, dtypes, sizes."""
        by_name = {c.name: c for c in self.constants}
        by_fqn = {c.original_fqn: c for c in self.constants}
        values, unknown, wrong = {}, [], []
        for key, tensor in mapping.items():
            info = by_fqn.get(key) or by_name.get(key)
            if info is None:
                unknown.append(key)
                continue
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"constant {key!r} must be a torch.Tensor, "
                                f"got {type(tensor).__name__}")
            if tensor.dtype != info.dtype:
                wrong.append(f"{key!r} has dtype {tensor.dtype}, expected {info.dtype}")
            elif info.data_size is not None and tensor.nbytes != info.data_size:
                wrong.append(f"{key!r} has {tensor.nbytes} bytes "
                             f"(shape {tuple(tensor.shape)}), expected {info.data_size}")
            # The runtime copies the whole storage from the data pointer, so
            # hand it a tensor whose storage is exactly its own elements.
            if (not tensor.is_contiguous() or tensor.storage_offset() != 0
                    or tensor.untyped_storage().nbytes() != tensor.nbytes):
                tensor = tensor.clone(memory_format=torch.contiguous_format)
            values[info.name] = tensor.detach()
        if unknown:
            raise ValueError(
                f"unknown constants {unknown}; the model's constants are "
                f"{sorted(by_fqn)}")
        if wrong:
            raise ValueError("constants do not match the model: " + "; ".join(wrong))
        return values

    @property
    def constants_blob_size(self):
        """Bytes of the constants blob a package's ``.blob`` weights file holds."""
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

    def _load_constants_blob(self, const unsigned char[::1] buffer):
        """Load every constant from a package's ``.blob`` weights (e.g. an
        mmap of it); the loader calls this once. The runtime copies the blob,
        and would leave constants pointing at freed memory if asked twice."""
        cdef ModelLibrary lib = self.library
        cdef AOTIRuntimeError status
        cdef const unsigned char* data = NULL
        self._check_open()
        if self._blob_loaded:
            raise RuntimeError("this container already loaded its constants blob")
        lib.require(<void*>lib.fn.model_update_constants_from_blob,
                    "AOTInductorModelUpdateConstantsFromBlob")
        expected = self.constants_blob_size
        if <uint64_t>buffer.shape[0] < expected:
            raise PackageError(f"constants blob has {buffer.shape[0]} bytes, the "
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


cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL:
    """A new handle referring to ``tensor``'s storage (a numpy array is
    viewed as a CPU tensor); raises TypeError for anything else."""
    return aoti_cy_handle_from_tensor(tensor)


cdef object tensor_from_handle(AtenTensorHandle handle):
    """The tensor a handle refers to, stealing the handle (None for NULL)."""
    return aoti_cy_tensor_from_handle(handle)


cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil:
    """Free every non-NULL handle (a repeated one once) and NULL the slots."""
    aoti_cy_free_handles(handles, count)


def load(path, *, device=None, num_models=1, model_name="model"):
    """Load an AOTInductor artifact and return a :class:`ModelContainer`.

    ``path`` is a `.pt2` package (from ``aoti_compile_and_package``), an
    extracted package directory, or a bare model `.so`. ``device=None`` means
    the device the model was compiled for. ``model_name`` picks one model of
    a package that holds several.
    """
    cdef ModelContainer container
    artifact = _package.open_artifact(path, model_name)
    try:
        if device is None:
            device = artifact.device
        container = ModelContainer(
            artifact.library_path, device=device, num_models=num_models,
            cubin_dir=artifact.cubin_dir)
        container._package = artifact
        artifact.load_weights_into(container)
    except BaseException:
        artifact.cleanup()
        raise
    return container
