"""The proxy executor: how a model runs the ops inductor could not compile and
torch has no C shim for (``torch.library.custom_op`` ops, some aten ops such
as ``torch.unique``).

The model calls ``aoti_torch_proxy_executor_call_function`` with the index of
an extern node and that node's flattened int and tensor arguments; libtorch
hands the call to the executor whose handle the run was given. Ours
(csrc/proxy_executor.cpp) is built once per container from the package's
``.json`` of extern nodes (decoded by aoti_cy._extern_nodes): each op is
looked up in the dispatcher and every argument checked against its schema at
load, so that a package that cannot run is a PackageError then, not a failed
run later. A call holds no GIL; an op written in Python takes it itself.
"""

from libc.stdint cimport uintptr_t
from libcpp.string cimport string

import os

import torch

from aoti_cy.includes.proxy_executor cimport *
from aoti_cy.errors import PackageError
from aoti_cy._extern_nodes import json_path_for, read_nodes
from aoti_cy._device import parse_device

__all__ = ["ProxyExecutor", "executor_for"]

_KINDS = {
    "as_none": AOTI_CY_AS_NONE,
    "as_tensor": AOTI_CY_AS_TENSOR,
    "as_tensors": AOTI_CY_AS_TENSORS,
    "as_optional_tensors": AOTI_CY_AS_OPTIONAL_TENSORS,
    "as_optional_tensor": AOTI_CY_AS_OPTIONAL_TENSOR,
    "as_int": AOTI_CY_AS_INT,
    "as_sym_int": AOTI_CY_AS_SYM_INT,
    "as_ints": AOTI_CY_AS_INTS,
    "as_sym_ints": AOTI_CY_AS_SYM_INTS,
    "as_float": AOTI_CY_AS_FLOAT,
    "as_floats": AOTI_CY_AS_FLOATS,
    "as_bool": AOTI_CY_AS_BOOL,
    "as_bools": AOTI_CY_AS_BOOLS,
    "as_string": AOTI_CY_AS_STRING,
    "as_strings": AOTI_CY_AS_STRINGS,
    "as_scalar_type": AOTI_CY_AS_SCALAR_TYPE,
    "as_memory_format": AOTI_CY_AS_MEMORY_FORMAT,
    "as_layout": AOTI_CY_AS_LAYOUT,
    "as_device": AOTI_CY_AS_DEVICE,
}

# Namespaces whose ops torch registers itself: one missing there means the
# package was built by a torch that has it, not that a module is unimported.
_TORCH_NAMESPACES = frozenset({
    "aten", "prim", "prims", "quantized", "_quantized", "rngprims", "inductor",
    "_c10d_functional", "c10d", "c10d_functional", "_dtensor", "profiler",
    "higher_order", "mkldnn", "onednn", "debugprims", "_test",
})


cdef AotiCyExternArg _arg(object arg) except *:
    cdef AotiCyExternArg out
    out.name = arg.name.encode()
    out.kind = _KINDS[arg.kind]
    out.count = arg.count
    out.ints = arg.ints
    out.floats = arg.floats
    out.strings = [s.encode() for s in arg.strings]
    return out


cdef class ProxyExecutor:
    """Runs the extern nodes ``nodes`` (aoti_cy._extern_nodes.Node, in extern
    node order) for a model on ``device``; ``path`` names their file in
    messages. Raises PackageError when an op is not registered in this
    process or a node does not fit its op's schema.

    ``handle`` is the address of the ``torch::aot_inductor::ProxyExecutor``
    to pass with every run of the model; it lives as long as this object.
    """

    cdef AotiCyProxyExecutor* _executor
    cdef readonly tuple targets
    cdef readonly str path

    def __cinit__(self, *args, **kwargs):
        self._executor = NULL

    def __init__(self, nodes, device="cpu", path="<extern nodes>"):
        cdef AotiCyExternNode node
        cdef string error
        cdef int status
        if self._executor != NULL:
            raise RuntimeError("ProxyExecutor.__init__ called twice")
        _, device_type, device_index = parse_device(device)
        self.path = os.fspath(path)
        self._executor = aoti_cy_proxy_executor_new(device_type, device_index)
        if self._executor == NULL:
            raise MemoryError()
        for index, entry in enumerate(nodes):
            node.target = entry.target.encode()
            node.op_name = entry.op_name.encode()
            node.overload = entry.overload.encode()
            node.inputs.clear()
            for arg in entry.inputs:
                node.inputs.push_back(_arg(arg))
            node.outputs.clear()
            for arg in entry.outputs:
                node.outputs.push_back(_arg(arg))
            status = aoti_cy_proxy_executor_add_node(self._executor, node, &error)
            if status == AOTI_CY_NODE_UNKNOWN_OP:
                raise PackageError(
                    f"extern node {index} of {self.path} calls {entry.target}, which "
                    f"is not registered in this process: {_registration_hint(entry)}")
            if status != AOTI_CY_NODE_ADDED:
                raise PackageError(
                    f"extern node {index} of {self.path} ({entry.target}) does not fit "
                    f"the op: {error.decode('utf-8', 'replace')}")
        self.targets = tuple([entry.target for entry in nodes])

    def __dealloc__(self):
        aoti_cy_proxy_executor_free(self._executor)
        self._executor = NULL

    @property
    def handle(self):
        """The AOTIProxyExecutorHandle, as an int."""
        return <uintptr_t>aoti_cy_proxy_executor_handle(self._executor)

    @property
    def failure_check(self):
        """Address of ``int check(const void* handle) noexcept``, callable
        without the GIL: whether a call of the executor with that handle
        failed on this thread since its error was last taken."""
        return <uintptr_t>&aoti_cy_proxy_executor_failed

    def take_error(self):
        """Why a call made on this thread last failed (naming the op), or
        None; forgotten once read. A failed run reports only that the call
        failed."""
        cdef string reason = aoti_cy_proxy_executor_take_error(self._executor)
        return reason.decode("utf-8", "replace") if reason.size() else None

    def __repr__(self):
        return f"<aoti_cy ProxyExecutor of {len(self.targets)} nodes from {self.path}>"


def _registration_hint(entry):
    namespace = entry.op_name.partition("::")[0]
    if namespace in _TORCH_NAMESPACES:
        return (f"torch {torch.__version__} has no such op; was the package built "
                f"by another torch version?")
    if entry.custom_op:
        return ("it is a torch.library.custom_op: import the Python module that "
                "defines it before loading the model")
    return (f"import the Python module that registers the {namespace!r} ops (the "
            f"module defining its torch.library.custom_op, or the package that "
            f"loads its C++ library) before loading the model")


def executor_for(library_path, device):
    """The proxy executor for the model at ``library_path`` (its fallback
    ops described by the ``.json`` beside it), or None when it needs none:
    then runs pass NULL, as before, at no cost."""
    path = json_path_for(library_path)
    if not os.path.isfile(path):
        return None
    nodes = read_nodes(path)
    if not nodes:
        return None
    return ProxyExecutor(nodes, device, path)
