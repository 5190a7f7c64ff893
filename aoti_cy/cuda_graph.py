"""Capturing a model run into a CUDA graph by hand (see aoti_cy.cuda_graphs,
where the code lives, for automatic graphs: ``load(..., cuda_graphs=True)``).

    captured = aoti_cy.cuda_graph.capture(container, example_inputs)
    outputs = captured.replay(x)        # copies x into the static input, replays

Limits: shapes are static (those of the captured inputs); replay always reads
the same input buffers (``captured.inputs``, filled by ``replay``'s arguments)
and writes the same output tensors (``captured.outputs``, overwritten by the
next replay: clone what you keep); the capture uses
``run_single_threaded``, so nothing else may run the container while a replay
of it is in flight on another stream.
"""

from aoti_cy.cuda_graphs import CaptureError, CapturedRun, capture

__all__ = ["CaptureError", "CapturedRun", "capture"]
