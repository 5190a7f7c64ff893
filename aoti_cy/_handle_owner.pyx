"""The base of every model object: ``_HandleOwner``.

It holds what containers and single instances share: the library (kept
alive under them), the library's description, the gate that lets close()
wait for the calls in flight, the input checks, and the one run path that
``run``, ``model(...)``, ``Model.run`` and the C API's ``run_handles`` all
end in (``invoke``: checks, device guard, gate, the subclass's C entry
point, failure handling, without the GIL). Subclasses provide the entry
point, its name, their failure message and freeing their handle.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS

from aoti_cy.includes.abi cimport (
    AOTI_RUNTIME_FAILURE, AOTI_RUNTIME_SUCCESS, AOTIRuntimeError, AtenTensorHandle)
from aoti_cy.includes.bridge cimport AotiCyDevice, AotiCyRunBuffers
cimport aoti_cy._tensor_bridge as bridge
from aoti_cy.includes.run_gate cimport (
    aoti_cy_gate_close_and_drain, aoti_cy_gate_enter, aoti_cy_gate_is_closed,
    aoti_cy_gate_leave, aoti_cy_gate_set_closed)
from aoti_cy._call_checks cimport (
    check_input_handles, free_input_guards, input_guards_for, input_sequence)
from aoti_cy._device cimport (
    AOTI_CY_DEVICE_CUDA, current_stream, enter_device, leave_device, stream_pointer)

from aoti_cy._call import OUT_LEAF, OUT_TUPLE

# _call's output kinds as C ints: compared on every model(...) call.
cdef int _OUT_TUPLE = OUT_TUPLE
cdef int _OUT_LEAF = OUT_LEAF


cdef int _raise_closed(_HandleOwner owner) except -1 with gil:
    raise RuntimeError(f"this {type(owner).__name__} is closed")


cdef int _raise_weights_missing(_HandleOwner owner) except -1 with gil:
    raise RuntimeError(owner._weights.missing_message(type(owner).__name__))


cdef int _raise_counts(_HandleOwner owner, size_t count_in, size_t count_out) except -1 with gil:
    raise ValueError(f"the model takes {owner._num_inputs} inputs and {owner._num_outputs} "
                     f"outputs, got {count_in} and {count_out}")


@cython.no_gc_clear
cdef class _HandleOwner:
    """Base of ModelContainer and Model: their library, description, and
    the gate that lets close() wait for the calls in flight."""

    def __cinit__(self, *args, **kwargs):
        aoti_cy_gate_set_closed(&self._closed, 1)
        self._input_guards = NULL
        self._input_names = ()
        self._device_index = -1

    def __dealloc__(self):
        # No run can be in flight: every caller holds a reference to self.
        self.free_handle(False)
        free_input_guards(self._input_guards)
        self._input_guards = NULL

    cdef int own_handle(self, void* handle, void* delete_fn,
                        const char* delete_name) except -1:
        """Take ownership of the C handle a subclass created."""
        self._delete_handle = <DeleteHandleFn>delete_fn
        self._delete_name = delete_name
        self._handle = handle
        return 0

    cdef int free_handle(self, bint check) except -1:
        """Delete the handle, once: it is taken under the GIL, so one closer
        deletes it; ``check`` raises on a failed delete (not in __dealloc__)."""
        cdef void* handle = self._handle
        cdef AOTIRuntimeError status = AOTI_RUNTIME_SUCCESS
        self._handle = NULL
        if handle != NULL:
            with nogil:
                status = self._delete_handle(handle)
            if check:
                self.library.check(status, self._delete_name)
        return 0

    # ---- the gate -----------------------------------------------------------

    cdef int check_open(self) except -1:
        if aoti_cy_gate_is_closed(&self._closed):
            _raise_closed(self)
        return 0

    cdef void* stream_for(self, object stream) except? NULL:
        """The raw stream a call gives (NULL: the current one); a stream for
        a model that does not run on CUDA is refused."""
        cdef void* raw_stream = stream_pointer(stream, self._device)
        if raw_stream != NULL and self._device_type != AOTI_CY_DEVICE_CUDA:
            raise ValueError("stream is only meaningful for CUDA models")
        return raw_stream

    cdef int enter(self) except -1 nogil:
        """Pass the gate before using the handle; close() waits for leave()."""
        if not aoti_cy_gate_enter(&self._active_runs, &self._closed):
            _raise_closed(self)
        return 0

    cdef void leave(self) noexcept nogil:
        aoti_cy_gate_leave(&self._active_runs)

    def close(self):
        """Wait for the calls in flight, then free the handle and the
        package's extracted files. Idempotent; every later call raises."""
        with nogil:
            aoti_cy_gate_close_and_drain(&self._active_runs, &self._closed)
        package, self._package = self._package, None
        try:
            self.free_handle(True)
        finally:
            if package is not None:
                package.cleanup()

    def __enter__(self):
        self.check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ---- description ----------------------------------------------------------

    cdef int describe(self, object description, object device, bint check_inputs) except -1:
        """Take the library's description; build the input checks."""
        self._description = description
        self._input_names = description.input_names
        self._num_inputs = description.num_inputs
        self._num_outputs = description.num_outputs
        self._flat_call = description.flat_call
        self._out_kind = description.out_kind
        self._check_inputs = check_inputs
        if check_inputs:
            self._input_guards = input_guards_for(
                self.library, self._num_inputs,
                self._device_index if self._device_type == AOTI_CY_DEVICE_CUDA else -1,
                self._input_names, description.call_spec[0])
        return 0

    cdef int note_constants_present(self, object present) except -1:
        """Record which constants have values (internal names): runs refuse
        while one that is not folded has none."""
        self._weights.note_present(present)
        self._weights_missing = self._weights.missing
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
        return self._description.output_names if self._description is not None else ()

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
        return self._description.call_spec if self._description is not None else ("", "")

    @property
    def device(self):
        """The ``torch.device`` the model runs on."""
        return self._device

    @property
    def constants(self):
        """A ConstantInfo per constant of the model, in the runtime's order."""
        self.check_open()
        return self._description.constants

    @property
    def constant_fqns(self):
        """Map each constant's original FQN to its internal name."""
        self.check_open()
        return self._weights.fqn_to_name()

    @property
    def check_inputs(self):
        """Whether runs check inputs against the model's shape contract and
        its own dtype, shape, stride and device checks (``check_inputs=`` at
        load)."""
        return self._check_inputs

    @property
    def metadata(self):
        """The package's metadata for this model (``AOTI_DEVICE_KEY`` and
        the like, plus any user metadata); {} when there is none."""
        return dict(self._package.metadata) if self._package is not None else {}

    @property
    def library_path(self):
        """Path of the model `.so` this was created from."""
        return self.library.path if self.library is not None else None

    def _is_flat_call(self):
        """Whether ``__call__`` skips pytree (for tests and benchmarks)."""
        return self._flat_call

    def __repr__(self):
        state = ("closed" if self.closed else
                 f"{len(self._input_names)} inputs, {self._num_outputs} outputs")
        return f"<aoti_cy.{type(self).__name__} on {self._device} ({state})>"

    # ---- the run path ---------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """Call the model as the exported module was called: the arguments
        are flattened by the package's input spec and the outputs rebuilt by
        its output spec (nested tuples, lists, dicts). numpy arrays are taken
        wherever tensors are, without copying."""
        return self.call(args, kwargs, None)

    cdef object call(self, tuple args, dict kwargs, object stream):
        cdef object outputs
        if self._flat_call and not kwargs:
            # The common case, without pytree: a flat tuple in, flat out.
            if self._out_kind == _OUT_TUPLE:
                return self.run_default(args, stream, True)
            outputs = self.run_default(args, stream, False)
            if self._out_kind == _OUT_LEAF:
                return outputs[0]
        else:
            self.check_open()
            outputs = self.run_default(
                self._description.call.flatten(args, kwargs), stream, False)
        return self._description.call.unflatten(outputs)

    cdef object run_default(self, object inputs, object stream, bint as_tuple):
        """The run of ``run`` and ``model(...)`` (ModelContainer adds CUDA
        graphs)."""
        return self.run_tensors(inputs, stream, False, as_tuple)

    cdef object run_tensors(self, object inputs, object stream, bint single_threaded,
                            bint as_tuple):
        """Tensors in, GIL released around the model, a list of tensors out
        (a tuple ``as_tuple``)."""
        cdef AotiCyRunBuffers buffers
        cdef size_t num_inputs = self._num_inputs, num_outputs = self._num_outputs
        cdef AotiCyDevice device
        cdef void* raw_stream

        if aoti_cy_gate_is_closed(&self._closed):
            _raise_closed(self)
        raw_stream = self.stream_for(stream)
        inputs = input_sequence(inputs, num_inputs, self._input_names)
        buffers.reserve(num_inputs, num_outputs)
        device.type = self._device_type
        device.index = self._device_index
        bridge.handles_from_tensors(
            PySequence_Fast_ITEMS(inputs), num_inputs, buffers.inputs, device,
            <PyObject*>self._input_names, buffers.keepalive)
        try:
            with nogil:
                self.invoke(buffers.inputs, num_inputs, buffers.outputs, num_outputs,
                            raw_stream, single_threaded)
        finally:
            # Dropped here, with the GIL: see csrc/tensor_bridge.h.
            bridge.drop_refs(buffers.keepalive, num_inputs)
        if as_tuple:
            return bridge.tuple_from_handles(buffers.outputs, num_outputs)
        return bridge.list_from_handles(buffers.outputs, num_outputs)

    cdef int invoke(self, AtenTensorHandle* inputs, size_t count_in,
                    AtenTensorHandle* outputs, size_t count_out, void* stream,
                    bint single_threaded) except -1 nogil:
        """One run on raw handles, without the GIL: every run ends here."""
        cdef AOTIRuntimeError status = AOTI_RUNTIME_FAILURE
        cdef bint called = False
        cdef void* device_guard = NULL
        cdef size_t i
        for i in range(count_out):
            outputs[i] = NULL
        try:
            if count_in != self._num_inputs or count_out != self._num_outputs:
                _raise_counts(self, count_in, count_out)
            if self._weights_missing:
                _raise_weights_missing(self)
            if self._input_guards != NULL:
                check_input_handles(self._input_guards, inputs, count_in)
            if self._device_type == AOTI_CY_DEVICE_CUDA:
                if stream == NULL:
                    current_stream(self._device_index, &stream)
                enter_device(self._device_type, self._device_index, &device_guard)
            self.enter()
            status = self.call_entry(inputs, outputs, stream, single_threaded)
            self.leave()
            called = True
        finally:
            leave_device(device_guard)
            if status != AOTI_RUNTIME_SUCCESS:
                # The model nulls each input handle it takes; free the rest.
                bridge.free_handles(inputs, count_in)
                bridge.free_handles(outputs, count_out)
        if called and status != AOTI_RUNTIME_SUCCESS:
            self.raise_failure(status, self.entry_name(single_threaded))
        return 0

    # ---- what subclasses provide --------------------------------------------

    cdef AOTIRuntimeError call_entry(self, AtenTensorHandle* inputs,
                                     AtenTensorHandle* outputs, void* stream,
                                     bint single_threaded) noexcept nogil:
        return AOTI_RUNTIME_FAILURE

    cdef const char* entry_name(self, bint single_threaded) noexcept nogil:
        return "run"

    cdef int raise_failure(self, AOTIRuntimeError status, const char* function) except -1 nogil:
        return self.library.check(status, function)
