"""The graphed call path of :mod:`aoti_cy.cuda_graphs`, in C.

A call's inputs are matched to a captured graph by their signature (dtype,
sizes, strides of every input on the model's GPU) without Python objects per
input. Each captured graph is wrapped in a graph of its own: a copy node per
input into its static input, the captured run, a copy node per output into
a fresh tensor from torch's caching allocator for the call's stream. A call
aims the copy nodes at its own tensors (only where an address changed) and
launches that graph once with ``cudaGraphLaunch``, all without the GIL
(csrc/graph_calls.cpp). Where the graph needs torch's replay prologue
(random number state), or the CUDA runtime cannot update copy nodes, the
inputs and outputs are copied with raw ``cudaMemcpyAsync`` around the
launch (or torch's ``CUDAGraph.replay()``) instead. The CUDA runtime is
found at run time in the libraries torch loaded, so this module builds and
imports with a CPU-only torch.
"""

from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS
from libc.stdint cimport uintptr_t

import torch

__all__ = ["Graph", "GraphTable", "load_runtime", "runtime_path"]


cdef extern from "graph_calls.h" nogil:
    ctypedef struct AotiCyGraphEntry:
        pass

    ctypedef struct AotiCyGraphCall:
        pass

    int aoti_cy_graph_runtime_load() except -1 with gil
    const char* aoti_cy_graph_error()
    const char* aoti_cy_graph_runtime_path()
    AotiCyGraphCall* aoti_cy_graph_call_new()
    void aoti_cy_graph_call_free(AotiCyGraphCall* call)
    int aoti_cy_graph_signature(AotiCyGraphCall* call, PyObject* const* items, Py_ssize_t n,
                                int device_index) with gil
    AotiCyGraphEntry* aoti_cy_graph_entry_new(
        PyObject* const* inputs, Py_ssize_t n_in, PyObject* const* outputs, Py_ssize_t n_out,
        void* graph_exec) except NULL with gil
    void aoti_cy_graph_entry_free(AotiCyGraphEntry* entry)
    void aoti_cy_graph_entry_set_exec(AotiCyGraphEntry* entry, void* graph_exec)
    int aoti_cy_graph_entry_embed_copies(AotiCyGraphEntry* entry, void* captured_graph,
                                         int device_index) with gil
    int aoti_cy_graph_entry_copies_embedded(const AotiCyGraphEntry* entry)
    void aoti_cy_graph_entry_release_own_graph(AotiCyGraphEntry* entry)
    int aoti_cy_graph_entry_matches(const AotiCyGraphEntry* entry, const AotiCyGraphCall* call)
    int aoti_cy_graph_begin(AotiCyGraphCall* call, AotiCyGraphEntry* entry, int device_index,
                            void* stream, int fresh_outputs)
    int aoti_cy_graph_finish(AotiCyGraphCall* call, const AotiCyGraphEntry* entry,
                             int fresh_outputs)
    int aoti_cy_graph_call_wait(AotiCyGraphCall* call, int device_index)
    object aoti_cy_graph_take_outputs(AotiCyGraphCall* call) with gil


def load_runtime():
    """Find the CUDA runtime and torch's CUDA shim in the libraries torch
    has loaded.

    Raises
    ------
    RuntimeError
        This torch has no CUDA support loaded, or lacks an entry point.
    """
    aoti_cy_graph_runtime_load()


def runtime_path():
    """The file of the CUDA runtime the graphed calls use (after
    :func:`load_runtime`; ``""`` before)."""
    return aoti_cy_graph_runtime_path().decode()


cdef int _raise_call_error() except -1:
    raise RuntimeError(f"aoti_cy: a graphed call failed: "
                       f"{aoti_cy_graph_error().decode('utf-8', 'replace')}")


cdef class Graph:
    """One captured graph of a :class:`GraphTable`: the signature it was
    captured for and the buffers and executable graph a call uses.

    Parameters
    ----------
    captured : aoti_cy.cuda_graphs.CapturedRun
        The capture; its static inputs and outputs are the graph's.

    Attributes
    ----------
    captured : CapturedRun or None
        None once the signature runs plainly (``cuda_graphs="auto"``).
    plain : bool
        Whether calls of this signature run plainly.
    """

    cdef AotiCyGraphEntry* entry
    cdef readonly object captured
    cdef readonly bint plain
    cdef bint replay_by_torch

    def __cinit__(self):
        self.entry = NULL

    def __init__(self, captured):
        inputs = list(captured.inputs)
        outputs = list(captured.outputs)
        self.entry = aoti_cy_graph_entry_new(
            PySequence_Fast_ITEMS(inputs), len(inputs),
            PySequence_Fast_ITEMS(outputs), len(outputs), NULL)
        self.captured = captured
        self.plain = False
        self.replay_by_torch = True

    def __dealloc__(self):
        aoti_cy_graph_entry_free(self.entry)

    def launch_directly(self, uintptr_t graph_exec):
        """Launch the graph's ``cudaGraphExec_t`` (an address) from C
        instead of calling torch's ``replay()``."""
        aoti_cy_graph_entry_release_own_graph(self.entry)
        aoti_cy_graph_entry_set_exec(self.entry, <void*>graph_exec)
        self.replay_by_torch = False

    def embed_copies(self, uintptr_t captured_graph, int device_index):
        """Launch a graph of the copies and the captured graph (a
        ``cudaGraph_t`` address) from C: a call is then one launch, copies
        included. cuda:``device_index`` must be current.

        Raises
        ------
        RuntimeError
            The CUDA runtime cannot update copies in a graph, or refused to
            build it; calls are then as before.
        """
        if aoti_cy_graph_entry_embed_copies(self.entry, <void*>captured_graph,
                                            device_index) != 0:
            raise RuntimeError(f"aoti_cy: the copies cannot go into the graph: "
                               f"{aoti_cy_graph_error().decode('utf-8', 'replace')}")
        self.replay_by_torch = False

    def run_plainly(self):
        """Calls of this signature run plainly from now on; the graph and
        its buffers are dropped."""
        aoti_cy_graph_entry_release_own_graph(self.entry)
        aoti_cy_graph_entry_set_exec(self.entry, NULL)
        self.plain = True
        self.captured = None

    @property
    def launched_directly(self):
        """Whether calls launch the executable graph from C."""
        return not self.replay_by_torch

    @property
    def copies_in_graph(self):
        """Whether a call's copies are nodes of the graph it launches (one
        launch a call) rather than copies around the launch."""
        return bool(aoti_cy_graph_entry_copies_embedded(self.entry))


cdef class GraphTable:
    """One graph set: its graphs (least recently used first), the stream it
    was last used on and its per-call state. Used by one thread at a time.

    Parameters
    ----------
    device_index : int
        The model's GPU.
    """

    cdef AotiCyGraphCall* state
    cdef int device_index
    cdef public list graphs
    cdef public object pool
    cdef public object generation

    def __cinit__(self):
        self.state = aoti_cy_graph_call_new()

    def __init__(self, int device_index):
        self.device_index = device_index
        self.graphs = []
        self.pool = torch.cuda.graph_pool_handle()
        self.generation = 0

    def __dealloc__(self):
        aoti_cy_graph_call_free(self.state)

    def call(self, runner, container, inputs, uintptr_t stream, bint static_outputs):
        """The outputs of a graphed call of ``inputs`` (a list or tuple of
        the model's input count) on ``stream`` (an address, 0 for the current
        stream); None where the call must run
        plainly. A signature without a graph goes to
        ``runner._capture_call``."""
        cdef void* raw
        cdef Graph graph
        if self.generation != runner._generation:
            self.clear()
            self.generation = runner._generation
        # An address (GraphRunner.run normalised it): 0 is the current stream.
        raw = <void*><uintptr_t>stream
        if not aoti_cy_graph_signature(self.state, PySequence_Fast_ITEMS(inputs), len(inputs),
                                       self.device_index):
            return None
        graph = self._find()
        if graph is None:
            return runner._capture_call(container, self, inputs, stream)
        if graph.plain:
            return None
        return self._replay(graph, raw, static_outputs)

    def find(self, inputs):
        """The graph for the signature of ``inputs``, or None (also where no
        graph can take them)."""
        if not aoti_cy_graph_signature(self.state, PySequence_Fast_ITEMS(inputs), len(inputs),
                                       self.device_index):
            return None
        return self._find()

    def replay(self, Graph graph, inputs, stream, bint static_outputs):
        """A call of ``graph`` on ``inputs`` (of its signature) and
        ``stream`` (an address, 0 for the current one)."""
        if graph.plain:
            raise ValueError("this signature runs plainly: its graph was dropped")
        if not self._is_signature_of(graph, inputs):
            raise ValueError("these inputs are not of the graph's signature")
        return self._replay(graph, <void*><uintptr_t>stream, static_outputs)

    def try_replay(self, Graph graph, tuple inputs, uintptr_t stream, bint static_outputs):
        """:meth:`replay`, or None where ``inputs`` are not of the graph's
        signature (the caller then copies them its own way)."""
        if graph.plain or not self._is_signature_of(graph, inputs):
            return None
        return self._replay(graph, <void*>stream, static_outputs)

    def order_stream(self, uintptr_t stream):
        """Order ``stream`` (an address, 0 for the current one) after the
        stream the set was last used on (before a capture into the set)."""
        cdef int rc
        with nogil:
            rc = aoti_cy_graph_begin(self.state, NULL, self.device_index, <void*>stream, 0)
            if rc == 0:
                rc = aoti_cy_graph_finish(self.state, NULL, 0)
        if rc != 0:
            _raise_call_error()

    def add(self, Graph graph, int max_graphs):
        """Keep ``graph`` as the most recently used; evict the least
        recently used beyond ``max_graphs`` (after the set's last stream
        is done with them)."""
        self.graphs.append(graph)
        if len(self.graphs) > max_graphs:
            self.wait()
            del self.graphs[:len(self.graphs) - max_graphs]

    def clear(self):
        """Drop every graph, after the set's last stream is done with
        them."""
        if self.graphs:
            self.wait()
            self.graphs.clear()

    def wait(self):
        """Wait for the stream the set was last used on: no replay there
        still reads the buffers of a graph about to be dropped."""
        cdef int rc
        with nogil:
            rc = aoti_cy_graph_call_wait(self.state, self.device_index)
        if rc != 0:
            _raise_call_error()

    cdef bint _is_signature_of(self, Graph graph, inputs):
        """Whether ``inputs`` (a list or tuple) have ``graph``'s signature."""
        return (aoti_cy_graph_signature(self.state, PySequence_Fast_ITEMS(inputs), len(inputs),
                                        self.device_index)
                and aoti_cy_graph_entry_matches(graph.entry, self.state))

    cdef Graph _find(self):
        cdef list graphs = self.graphs
        cdef Py_ssize_t i, n = len(graphs)
        cdef Graph graph
        for i in range(n - 1, -1, -1):
            graph = <Graph>graphs[i]
            if aoti_cy_graph_entry_matches(graph.entry, self.state):
                if i != n - 1:
                    del graphs[i]
                    graphs.append(graph)
                return graph
        return None

    cdef object _replay(self, Graph graph, void* stream, bint static_outputs):
        cdef int rc
        cdef AotiCyGraphCall* state = self.state
        cdef AotiCyGraphEntry* entry = graph.entry
        cdef int device_index = self.device_index
        with nogil:
            rc = aoti_cy_graph_begin(state, entry, device_index, stream, not static_outputs)
        if rc != 0:
            _raise_call_error()
        if graph.replay_by_torch:
            # The call's device and stream are current: torch replays there.
            try:
                graph.captured.graph.replay()
            except BaseException:
                aoti_cy_graph_finish(state, NULL, 0)
                raise
        with nogil:
            rc = aoti_cy_graph_finish(state, entry, not static_outputs)
        if rc != 0:
            _raise_call_error()
        if static_outputs:
            return list(graph.captured.outputs)
        return aoti_cy_graph_take_outputs(state)
