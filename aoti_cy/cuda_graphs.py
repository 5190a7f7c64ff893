"""Automatic CUDA graphs for a CUDA model container.

    model = aoti_cy.load("model.pt2", cuda_graphs=True)
    y = model(x)          # first call with x's signature: warm up, capture, replay
    y = model(x2)         # same signature: copy x2 into the static input, replay

A graph is captured per input *signature* (dtype, sizes, strides, device of
every input); a later call with that signature is one graph launch instead of
one launch per kernel: a graph of copy nodes (its inputs into the graph's
static inputs, the static outputs into fresh tensors) around the captured
run. No input copy where the input *is* the static one: see
:meth:`GraphRunner.static_inputs`. That call runs in C
(:mod:`aoti_cy._graph_calls`): signature lookup, copy nodes aimed at the
call's tensors, ``cudaGraphLaunch`` on the call's stream, fresh outputs from
torch's caching allocator, without the GIL. ``cuda_graphs="auto"`` times
graphed calls against plain runs per signature after its capture and keeps
the faster (:attr:`GraphRunner.decisions`). A capture runs the model through
``run_single_threaded`` after warm-up runs on a side stream, which check the
inputs as any run does; a replay's signature equals the captured one, so it
passes the same checks.

Rules:

- Outputs: by default each call returns copies the caller owns;
  ``static_outputs=True`` returns the graph's own output tensors, which the
  next call of the same graph set overwrites.
- Graph sets: one per model instance of the container (``num_models``); a
  call takes a free set, as a plain run takes a free model instance, so up to
  ``num_models`` threads replay at once. Each set keeps at most
  ``max_graphs`` graphs (least recently used evicted) and all its graphs
  share one memory pool. Sets used on several streams order themselves: a
  call on another stream than the set's last one waits for that stream.
- Weights: every change of the active constants (``load_weights``,
  ``swap_constant_buffer``, ``update_constant_buffer``, constant folding)
  swaps or rewrites the buffers the graphs read, so it invalidates every
  graph; the next call of each signature captures again.
- Fallback: a CPU model, a model that calls fallback ops through the proxy
  executor, one without ``run_single_threaded``, a capture that fails
  (a CPU sync, a data-dependent shape) or one with an output on the CPU
  (which a replay would not recompute) runs plainly from then on, after one
  warning that says why.

``capture(container, inputs)`` captures one run by hand (the older API,
kept for callers of ``aoti_cy.cuda_graph``).
"""

import collections
import contextlib
import queue
import threading
import time
import warnings

import torch

from aoti_cy import _graph_calls
from aoti_cy._device import on_device, stream_address

__all__ = ["CaptureError", "CapturedRun", "Decision", "GraphRunner", "GraphsUnavailable",
           "capture", "make_runner"]

DEFAULT_MAX_GRAPHS = 16
_WARMUP_RUNS = 2


class GraphsUnavailable(RuntimeWarning):
    """Issued once when a model falls back from CUDA graphs to plain runs."""


class CaptureError(RuntimeError):
    """A run could not be captured (a CPU sync, a data-dependent shape...)."""


class CapturedRun:
    """One run of a CUDA container recorded in a ``torch.cuda.CUDAGraph``.

    Made by :func:`capture`. Warm-up runs (first-run work such as constant
    folding) happen on a side stream before the capture and check the inputs
    as any run does.

    Parameters
    ----------
    container : ModelContainer
        A container of a CUDA model whose library exports
        ``AOTInductorModelContainerRunSingleThreaded``.
    inputs : sequence of torch.Tensor
        Example inputs; their values are copied into the static inputs.
    warmup : int
        Plain runs before the capture.

    Attributes
    ----------
    inputs : list of torch.Tensor
        The static inputs the graph reads.
    outputs : list of torch.Tensor
        The tensors the graph writes, overwritten by every replay.
    graph : torch.cuda.CUDAGraph
        The captured graph.
    kept_graph : bool
        Whether ``graph.raw_cuda_graph()`` is readable (torch's
        ``keep_graph``).

    Raises
    ------
    ValueError
        The model does not run on CUDA, or the inputs do not fit it.
    CaptureError
        The run could not be captured (a CPU sync, a data-dependent shape).
    """

    def __init__(self, container, inputs, warmup=_WARMUP_RUNS, *, pool=None, stream=None):
        device = container.device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA model; this one runs on {device}")
        stream = stream if stream is not None else torch.cuda.Stream(device)
        # Static buffers the graph reads: the caller's values, same layout.
        self.inputs = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                           device=t.device).copy_(t) for t in inputs]
        current = torch.cuda.current_stream(device)
        stream.wait_stream(current)
        # Warm-up runs do first-run work (constant folding, kernel loads)
        # that must not be captured; they check the inputs like any run, and
        # their errors are the caller's.
        for _ in range(warmup):
            container.run_single_threaded(self.inputs, stream=stream)
        current.wait_stream(stream)
        # keep_graph: the cudaGraph_t stays readable, so a graphed call can
        # launch it together with its copies (torch instantiates on replay).
        try:
            self.graph = torch.cuda.CUDAGraph(keep_graph=True)
            self.kept_graph = True
        except TypeError:                         # a torch without keep_graph
            self.graph = torch.cuda.CUDAGraph()
            self.kept_graph = False
        try:
            # thread_local: other threads may replay or allocate meanwhile.
            with on_device(device), torch.cuda.graph(
                    self.graph, pool=pool, stream=stream,
                    capture_error_mode="thread_local"):
                self.outputs = container.run_single_threaded(self.inputs, stream=stream)
        except Exception as error:  # noqa: BLE001 - whatever broke the capture
            _end_broken_capture(device, stream)
            raise CaptureError(f"capturing a run of the model failed: {error}") from error
        self._device_index = device.index
        self._replays = None            # (GraphTable, Graph) of replay's C path
        self._replays_lock = threading.Lock()

    def replay(self, *inputs):
        """Replay the captured run on the current stream.

        Parameters
        ----------
        *inputs : torch.Tensor
            New values, copied into the static inputs first; none to replay
            on the values already there. Each must have the captured shape,
            dtype and device. Inputs of the captured strides too are copied
            in C (one raw device copy each, none for a static input passed
            itself); others through ``Tensor.copy_``.

        Returns
        -------
        list of torch.Tensor
            The static outputs (overwritten by the next replay: clone what
            you keep).

        Raises
        ------
        ValueError
            Wrong number of inputs, or one of another shape, dtype or device.
        """
        if inputs:
            with self._replays_lock:
                outputs = self._replay_in_c(inputs)
            if outputs is not None:
                return self.outputs
            # Another signature (strides, a count, a device): copy_ copies
            # or the checks below refuse.
            if len(inputs) != len(self.inputs):
                raise ValueError(f"the captured run takes {len(self.inputs)} inputs, "
                                 f"got {len(inputs)}")
            for static, new in zip(self.inputs, inputs):
                if new.shape != static.shape or new.dtype != static.dtype:
                    raise ValueError(
                        f"a captured run needs inputs of shape {tuple(static.shape)} "
                        f"and dtype {static.dtype}, got {tuple(new.shape)} {new.dtype}")
                if new.device != static.device:
                    # copy_ would quietly move it across: refuse as a run does.
                    raise ValueError(f"an input is on {new.device} but the model runs "
                                     f"on {static.device}")
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs

    def _replay_in_c(self, inputs):
        """Raw copies into the static inputs and torch's replay, through
        :mod:`aoti_cy._graph_calls` on the current stream; None where the
        inputs are not of the captured signature, or the C path cannot take
        this graph (then replay copies in Python)."""
        if self._replays is None:
            try:
                _graph_calls.load_runtime()
                self._replays = (_graph_calls.GraphTable(self._device_index),
                                 _graph_calls.Graph(self))
            except RuntimeError:        # e.g. an output on the CPU
                self._replays = False
        if self._replays is False:
            return None
        table, graph = self._replays
        return table.try_replay(graph, inputs, 0, True)


def _end_broken_capture(device, stream):
    """A capture that failed leaves torch's CUDA generators in capture mode
    (their epilogue never ran), so the next random op outside a capture
    fails; one tiny capture that succeeds puts them back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with on_device(device), torch.cuda.graph(
                torch.cuda.CUDAGraph(), stream=stream, capture_error_mode="thread_local"):
            torch.zeros(1, device=device).add_(1)


def capture(container, inputs, *, warmup=3):
    """Capture one run of ``container`` on ``inputs`` into a CUDA graph.

    Parameters
    ----------
    container : ModelContainer
        A container of a CUDA model.
    inputs : sequence of torch.Tensor
        Example inputs on the model's device.
    warmup : int, optional
        Plain runs before the capture (default 3).

    Returns
    -------
    CapturedRun
        Call ``replay(*new_inputs)`` to run it again.

    Raises
    ------
    ValueError
        The model does not run on CUDA, or the inputs do not fit it.
    CaptureError
        The run could not be captured.
    """
    return CapturedRun(container, inputs, warmup)


class _SharedGate:
    """Plain runs share it; a capture holds it alone. A capture runs the
    container through ``run_single_threaded``, which takes the container's
    first free model instance without its lock: no plain run may be in
    flight meanwhile."""

    def __init__(self):
        self._changed = threading.Condition(threading.Lock())
        self._sharers = 0
        self._held_alone = False
        self._waiting_alone = 0          # captures waiting go first

    def __enter__(self):                 # a plain run
        with self._changed:
            while self._held_alone or self._waiting_alone:
                self._changed.wait()
            self._sharers += 1

    def __exit__(self, *exc):
        with self._changed:
            self._sharers -= 1
            if self._sharers == 0:
                self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self):                     # a capture
        with self._changed:
            self._waiting_alone += 1
            while self._held_alone or self._sharers:
                self._changed.wait()
            self._waiting_alone -= 1
            self._held_alone = True
        try:
            yield
        finally:
            with self._changed:
                self._held_alone = False
                self._changed.notify_all()


Decision = collections.namedtuple("Decision", "choice graph_us plain_us")
Decision.__doc__ = """What ``cuda_graphs="auto"`` chose for one signature:
``choice`` (``"graph"`` or ``"plain"``) and the measured µs per call of a
graphed call (copies included) and of a plain run."""


def _signature(tensor):
    # Everything the model's input checks read: same signature, same verdict.
    return tensor.dtype, tensor.shape, tensor.stride(), tensor.device


class GraphRunner:
    """Runs a CUDA container's calls through CUDA graphs.

    Made by :func:`make_runner` when a container is created with
    ``cuda_graphs=True`` or ``"auto"``, and reachable as
    ``ModelContainer.cuda_graphs``. The container calls :meth:`run` for
    ``run``, ``model(...)`` and ``call_on_stream``. One graph set per model
    instance; each set holds at most ``max_graphs`` graphs (one per input
    signature), least recently used evicted. A call of a signature already
    captured runs in C (:mod:`aoti_cy._graph_calls`): signature lookup, one
    graph launch with the copies inside, fresh outputs, without the GIL.

    Attributes
    ----------
    device : torch.device
        The model's device.
    mode : True or "auto"
        ``"auto"`` times plain runs against graphed calls per signature and
        keeps the faster (see :attr:`decisions`).
    max_graphs : int
        Graphs kept per graph set.
    static_outputs : bool
        Whether calls return the graphs' own output tensors instead of
        fresh ones.
    enabled : bool
        False once graphs were turned off for this model.
    reason : str or None
        Why graphs were turned off.
    decisions : dict
        With ``mode="auto"``: signature (per input: dtype, shape, stride,
        device) -> :class:`Decision`, the latest per signature.
    copies_in_graph : bool
        Whether graphs captured from now on take a call's copies as nodes of
        one graph launch (the default where the CUDA runtime can aim them
        per call); False copies around the launch. Turned off, with
        :attr:`copies_note` saying why, where the runtime refuses.
    copies_note : str or None
        Why copies are not in the graphs.
    plain_runs : context manager
        Held by every plain run of the container while graphs are on; a
        capture waits for those in flight and holds new ones back.
    """

    def __init__(self, container, num_sets, max_graphs, static_outputs, mode=True):
        if not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"max_graphs must be a positive int, got {max_graphs!r}")
        _graph_calls.load_runtime()
        self.device = container.device
        self.mode = mode
        self.max_graphs = max_graphs
        self.static_outputs = bool(static_outputs)
        self.enabled = True
        self.reason = None                      # why graphs were turned off
        self.decisions = {}
        self.copies_in_graph = True
        self.copies_note = None
        self._num_inputs = container.num_inputs
        self._index = self.device.index
        self._generation = 0                    # bumped when the constants change
        self._capture_lock = threading.Lock()   # run_single_threaded: one at a time
        self.plain_runs = _SharedGate()         # plain runs wait while one captures
        self._capture_stream = None
        self._sets = [_graph_calls.GraphTable(self._index) for _ in range(num_sets)]
        self._free = queue.SimpleQueue()
        for graph_set in self._sets:
            self._free.put(graph_set)

    # ---- what the container calls ------------------------------------------

    def run(self, container, inputs, stream=None):
        """The outputs of a graphed call, or None where the container must
        run it plainly (graphs off, a signature "auto" runs plainly, or
        inputs no graph can take: the plain run then raises the right
        error)."""
        if not self.enabled:
            return None
        if type(inputs) is not list and type(inputs) is not tuple:
            return None
        if len(inputs) != self._num_inputs:
            return None
        # The one normaliser (aoti_cy._device): the plain run's forms and
        # errors; 0 is the current stream.
        stream = stream_address(stream, self.device)
        graph_set = self._free.get()
        try:
            return graph_set.call(self, container, inputs, stream, self.static_outputs)
        finally:
            self._free.put(graph_set)

    def invalidate(self):
        """The active constants changed: every graph must be captured again."""
        self._generation += 1

    def close(self):
        """Drop every graph (the container is closing). Waits for the device
        first, so no replay in flight reads memory returned to the pool."""
        self.enabled = False
        self.reason = "the container is closed"
        if torch.cuda.is_initialized():
            torch.cuda.synchronize(self.device)
        for graph_set in self._sets:
            graph_set.graphs.clear()

    # ---- public helpers ---------------------------------------------------

    def static_inputs(self, container, inputs):
        """The static input tensors of the graph for the signature of ``inputs``.

        Write a call's values into them and pass them themselves
        (``model(*static)``): the call then copies nothing.

        Parameters
        ----------
        container : ModelContainer
            The container this runner belongs to.
        inputs : sequence of torch.Tensor
            Inputs of the signature wanted; the graph is captured now if it
            does not exist yet.

        Returns
        -------
        list of torch.Tensor
            The graph's static inputs.

        Raises
        ------
        RuntimeError
            The container has several graph sets (``num_models`` > 1), CUDA
            graphs are off for this model, or ``"auto"`` runs this signature
            plainly.
        """
        if len(self._sets) != 1:
            raise RuntimeError("static_inputs needs num_models=1 (one graph set)")
        inputs = list(inputs)
        graph_set = self._free.get()
        try:
            self._check_generation(graph_set)
            graph = graph_set.find(inputs)
            if graph is None:
                if self._capture_call(container, graph_set, inputs, 0) is None:
                    if not self.enabled:
                        raise RuntimeError(f"CUDA graphs are off for this model: {self.reason}")
                    raise RuntimeError("no CUDA graph can take these inputs")
                graph = graph_set.find(inputs)
            if graph is None or graph.plain:
                raise RuntimeError('cuda_graphs="auto" runs these inputs plainly: '
                                   'they have no static inputs')
            return list(graph.captured.inputs)
        finally:
            self._free.put(graph_set)

    def captured(self):
        """Each graph set's captured runs (signature -> CapturedRun), most
        recently used last: for tests and benchmarks."""
        return [{tuple(map(_signature, graph.captured.inputs)): graph.captured
                 for graph in graph_set.graphs if graph.captured is not None}
                for graph_set in self._sets]

    def graphs(self):
        """Each graph set's graphs (:class:`aoti_cy._graph_calls.Graph`),
        most recently used last: for tests and benchmarks."""
        return [list(graph_set.graphs) for graph_set in self._sets]

    def disable(self, reason):
        """Turn graphs off for good (later calls run plainly), warning once."""
        if self.enabled:
            self.enabled = False
            self.reason = reason
            warnings.warn(f"aoti_cy: CUDA graphs are off for this model, it runs "
                          f"without them: {reason}", GraphsUnavailable, stacklevel=5)

    # ---- internals ----------------------------------------------------------

    def _check_generation(self, graph_set):
        if graph_set.generation != self._generation:
            graph_set.clear()
            graph_set.generation = self._generation

    def _stream_object(self, stream):
        """The torch.cuda.Stream of a stream address (0: the current one)."""
        if stream == 0:
            return torch.cuda.current_stream(self.device)
        return torch.cuda.ExternalStream(stream, device=self.device)

    def _capture_call(self, container, graph_set, inputs, stream):
        """A call whose signature has no graph in ``graph_set``: capture one
        and replay it, on the call's device and stream. None (graphs off,
        with a warning) where the model cannot be captured; errors of the
        warm-up runs (bad inputs, a failing model) are raised as is."""
        stream = self._stream_object(stream)
        raw = stream.cuda_stream
        with on_device(self.device), torch.cuda.stream(stream):
            graph_set.order_stream(raw)
            with self._capture_lock:
                if not self.enabled:
                    return None
                if self._capture_stream is None:
                    self._capture_stream = torch.cuda.Stream(self.device)
                try:
                    with self.plain_runs.alone():
                        captured = CapturedRun(container, inputs, pool=graph_set.pool,
                                               stream=self._capture_stream)
                except CaptureError as error:
                    self.disable(str(error))
                    return None
                try:
                    graph = _graph_calls.Graph(captured)
                except RuntimeError as error:
                    self.disable(str(error))
                    return None
                graph_set.add(graph, self.max_graphs)
                outputs = self._first_replay(graph_set, graph, inputs, raw)
                if self.mode == "auto":
                    self._decide(container, graph_set, graph, inputs, stream)
            return outputs

    def _first_replay(self, graph_set, graph, inputs, raw):
        # torch's replay() first moves the random-number state of a graph
        # that draws random numbers; a graph that moves none is launched
        # from C from now on: one graph of its copies and the captured one
        # where the CUDA runtime can aim copy nodes per call, else torch's
        # executable graph between raw copies.
        generator = torch.cuda.default_generators[self._index]
        before = generator.get_offset()
        outputs = graph_set.replay(graph, inputs, raw, self.static_outputs)
        if generator.get_offset() != before:
            return outputs
        if self.copies_in_graph and graph.captured.kept_graph:
            try:
                graph.embed_copies(graph.captured.graph.raw_cuda_graph(), self._index)
                return outputs
            except RuntimeError as error:
                self.copies_in_graph = False    # the runtime cannot: say why
                self.copies_note = str(error)
        raw_exec = getattr(graph.captured.graph, "raw_cuda_graph_exec", None)
        if raw_exec is not None:
            graph.launch_directly(raw_exec())
        return outputs

    def _decide(self, container, graph_set, graph, inputs, stream):
        """``"auto"``: time plain runs and graphed calls of this signature,
        keep the faster."""
        raw = stream.cuda_stream

        def per_call_us(call, calls=8, rounds=3):
            best = float("inf")
            call()
            for _ in range(rounds):
                stream.synchronize()
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                stream.synchronize()
                best = min(best, time.perf_counter() - start)
            return best / calls * 1e6

        graph_us = per_call_us(lambda: graph_set.replay(graph, inputs, raw,
                                                        self.static_outputs))
        # The pooled, locked run: other threads may run this container now.
        plain_us = per_call_us(lambda: container._run_plain(inputs, stream))
        choice = "graph" if graph_us <= plain_us else "plain"
        self.decisions[tuple(map(_signature, inputs))] = Decision(choice, graph_us, plain_us)
        if choice == "plain":
            stream.synchronize()     # no replay in flight reads what is dropped
            graph.run_plainly()


def make_runner(container, *, num_models=1, max_graphs=DEFAULT_MAX_GRAPHS,
                static_outputs=False, proxy_executor=False, mode=True):
    """Make the :class:`GraphRunner` of a container.

    Parameters
    ----------
    container : ModelContainer
        The container whose calls go through graphs.
    num_models : int
        Model instances of the container: one graph set each.
    max_graphs : int
        Graphs kept per set.
    static_outputs : bool
        Return the graphs' own output tensors instead of clones.
    proxy_executor : bool
        Whether the model calls fallback ops (graphs would skip their
        host-side work).
    mode : True or "auto"
        The container's ``cuda_graphs`` value: ``True`` replays every
        signature it can capture; ``"auto"`` times plain runs against
        graphed calls per signature after its capture and keeps the faster.

    Returns
    -------
    GraphRunner or None
        None, after one :class:`GraphsUnavailable` warning saying why, for a
        model that cannot run through CUDA graphs.

    Raises
    ------
    ValueError
        ``max_graphs`` is not a positive int, or ``mode`` is neither True
        nor ``"auto"``.
    """
    if not isinstance(max_graphs, int) or max_graphs < 1:
        raise ValueError(f"max_graphs must be a positive int, got {max_graphs!r}")
    if mode not in (True, "auto"):
        raise ValueError(f'cuda_graphs must be False, True or "auto", got {mode!r}')
    reason = None
    if container.device.type != "cuda":
        reason = f"it runs on {container.device}; CUDA graphs need a CUDA model"
    elif proxy_executor:
        reason = ("it calls fallback ops through the proxy executor (custom ops), "
                  "whose host-side work a graph replay would skip")
    elif not container.library.exported().get("AOTInductorModelContainerRunSingleThreaded"):
        reason = ("its library does not export AOTInductorModelContainerRunSingleThreaded, "
                  "which capturing needs")
    if reason is not None:
        warnings.warn(f"aoti_cy: CUDA graphs are off for this model, it runs without "
                      f"them: {reason}", GraphsUnavailable, stacklevel=3)
        return None
    return GraphRunner(container, num_models, max_graphs, static_outputs, mode)
