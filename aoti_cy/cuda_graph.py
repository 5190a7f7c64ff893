"""Capturing a model run into a CUDA graph and replaying it.

    captured = aoti_cy.cuda_graph.capture(container, example_inputs)
    outputs = captured.replay(x)        # copies x into the static input, replays

Limits: shapes are static (those of the captured inputs); replay always reads
the same input buffers (``captured.inputs``, filled by ``replay``'s arguments)
and writes the same output tensors (``captured.outputs``, overwritten by the
next replay: clone what you keep); the capture uses
``run_single_threaded``, so nothing else may run the container while a replay
of it is in flight on another stream.
"""

import torch

__all__ = ["CapturedRun", "capture"]


class CapturedRun:
    """A run of a CUDA container recorded in a ``torch.cuda.CUDAGraph``."""

    def __init__(self, container, inputs, warmup):
        device = container.device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA model; this one runs on {device}")
        self.container = container
        # Static buffers the graph reads: the caller's values, copied once.
        self.inputs = [t.detach().clone() for t in inputs]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            # Warm-up runs do first-run work (constant folding, kernel loads)
            # that must not be captured.
            for _ in range(warmup):
                container.run_single_threaded(self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), torch.cuda.graph(self.graph):
            # torch.cuda.graph makes its capture stream current; the run is
            # issued on the current stream of the model's device.
            self.outputs = container.run_single_threaded(self.inputs)

    def replay(self, *inputs):
        """Copy ``inputs`` (if given) into the static inputs, replay, and
        return the static outputs."""
        if inputs:
            if len(inputs) != len(self.inputs):
                raise ValueError(f"the captured run takes {len(self.inputs)} inputs, "
                                 f"got {len(inputs)}")
            for static, new in zip(self.inputs, inputs):
                if new.shape != static.shape or new.dtype != static.dtype:
                    raise ValueError(
                        f"a captured run needs inputs of shape {tuple(static.shape)} "
                        f"and dtype {static.dtype}, got {tuple(new.shape)} {new.dtype}")
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs


def capture(container, inputs, *, warmup=3):
    """Capture one run of ``container`` on ``inputs`` into a CUDA graph."""
    return CapturedRun(container, inputs, warmup)
