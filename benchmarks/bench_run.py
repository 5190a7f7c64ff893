"""Per-call time of aoti_cy against the C floor and torch's own runner.

One entry point; each model is measured in a process of its own, where every
variant runs on the same inputs:

- C floor: ``floor/c_floor.cpp`` driving the model's C ABI in a loop, no Python;
- aoti_cy nogil loop: the cimport API (``floor/nogil_loop.pyx``), no GIL;
- aoti_cy ``run`` and ``model(*args)`` (input checks on, the default), and
  ``run`` of a container loaded with ``check_inputs=False``;
- torch ``aoti_load_package(p).loader.run`` and ``aoti_load_package(p)(*args)``;
- eager PyTorch;
- with ``--cuda-graphs`` (CUDA): aoti_cy loaded with ``cuda_graphs=True``,
  called as ``model(...)`` and ``run`` (one launch of a graph whose copy
  nodes read the inputs and fill fresh outputs), ``model(...)`` of a
  container with ``copies_in_graph=False`` (raw copies around the launch),
  ``run`` on the graph's own static inputs (no input
  copy), the same with ``static_outputs=True`` (no copies at all), a bare
  ``torch.cuda.CUDAGraph.replay()`` of that capture (the floor), and that
  replay with one raw ``cudaMemcpyAsync`` per input and output through
  ctypes (the floor of a call that copies); on CUDA
  always ``aoti_cy.cuda_graphs.capture(...).replay`` (the manual helper).

Models: names of ``aoti_cy.testing.EXAMPLES``, ``two_kernels`` (one
matmul+tanh on a 64 x 256 input), ``launch_bound`` (24 x
matmul+tanh on a 64 x 256 input: 48 kernels, launch-bound on a big GPU),
``compute_bound`` (8 x matmul+tanh on 2048 x 2048: milliseconds of GPU work
a call; use few ``--calls``), or
a ``transformers`` model of tests/real_models.py (``llama``, ``gpt2``,
``resnet``, ...).

Each repeat times ``--calls`` calls of every variant in turn (so drift hits all
alike); figures are medians over ``--repeats`` repeats, in µs per call, and the
overhead over the C floor. On CUDA each loop ends with a synchronize and the
floor and nogil loop are not measured (they drive CPU models).
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "floor"))

MODELS = "add_one,four_three,mlp,matmul"
FLOOR, NOGIL, RUN, CALL = "C floor", "aoti_cy nogil loop", "aoti_cy run", "aoti_cy model(*args)"
LOADER, COMPILED, EAGER = "torch loader.run", "torch AOTICompiledModel()", "eager (no_grad)"
GRAPH = "aoti_cy CUDA graph replay"   # the manual aoti_cy.cuda_graphs.capture helper
UNCHECKED = "aoti_cy run, check_inputs=False"
G_CALL, G_RUN = "graphs: model(...)", "graphs: run"
G_AROUND = "graphs: model(...), copies around the launch"   # copies_in_graph=False
G_NO_COPY = "graphs: run(static inputs)"
G_STATIC = "graphs: run(static inputs), static_outputs"
G_BARE = "bare CUDAGraph.replay()"
G_RAW = "bare replay + raw copies"    # the floor of a call that copies in and out


def per_call_us(fn, calls, sync):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls * 1e6


def load_case(name, device):
    """(package path, args, kwargs, flat tensor inputs, eager module) for a
    model name: an aoti_cy.testing example or a transformers model."""
    import torch

    from aoti_cy.testing import EXAMPLES, Example, Heavy

    examples = dict(
        EXAMPLES,
        two_kernels=Example(Heavy, lambda g: [torch.randn(64, 256, generator=g)],
                            init_args=(256, 1)),
        launch_bound=Example(Heavy, lambda g: [torch.randn(64, 256, generator=g)],
                             init_args=(256, 24)),
        compute_bound=Example(Heavy, lambda g: [torch.randn(2048, 2048, generator=g)],
                              init_args=(2048, 8)))
    if name in examples:
        example = examples[name]
        inputs = example.inputs(device)
        return example.package(device), tuple(inputs), {}, inputs, example.eager(device)
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from real_models import REAL_MODELS, UPDATABLE
    real = REAL_MODELS[name]
    args, kwargs = real.call(device=device)
    flat = [a for a in args if isinstance(a, torch.Tensor)] + [
        v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    return real.package(device, **UPDATABLE), args, kwargs, flat, real.eager(device)


def graph_variants(path, args, kwargs, inputs):
    """The --cuda-graphs columns: aoti_cy's automatic graphs, the floor, the
    manual helper."""
    import warnings

    import aoti_cy

    graphed = aoti_cy.load(path, cuda_graphs=True)
    static_out = aoti_cy.load(path, cuda_graphs=True, static_outputs=True)
    around = aoti_cy.load(path, cuda_graphs=True)
    opened = [graphed, static_out, around]
    if graphed.cuda_graphs is None:
        warnings.warn(f"{path}: no CUDA graphs, the graph columns are plain runs")
        return {G_CALL: lambda: graphed(*args, **kwargs)}, opened
    around.cuda_graphs.copies_in_graph = False
    graphed(*args, **kwargs)                                  # captures
    around(*args, **kwargs)
    (graph,) = graphed.cuda_graphs.graphs()[0]
    if not graph.copies_in_graph:
        warnings.warn(f"copies are not in the graph: {graphed.cuda_graphs.copies_note}")
    (captured,) = graphed.cuda_graphs.captured()[0].values()
    static = graphed.cuda_graphs.static_inputs(graphed, inputs)
    static2 = static_out.cuda_graphs.static_inputs(static_out, inputs)
    return {G_CALL: lambda: graphed(*args, **kwargs), G_RUN: lambda: graphed.run(inputs),
            G_AROUND: lambda: around(*args, **kwargs),
            G_NO_COPY: lambda: graphed.run(static),
            G_STATIC: lambda: static_out.run(static2),
            G_BARE: captured.graph.replay,
            G_RAW: raw_copies_replay(captured, inputs)}, opened


def raw_copies_replay(captured, inputs):
    """A bare replay with one raw cudaMemcpyAsync per input (into the static
    input) and per output (into a tensor kept across calls), through ctypes:
    what the copies of a graphed call cost at the least."""
    import torch

    from aoti_cy import _graph_calls
    cudart = ctypes.CDLL(_graph_calls.runtime_path())
    copy = cudart.cudaMemcpyAsync
    copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                     ctypes.c_void_p]

    def span(t):
        return 0 if t.numel() == 0 else (1 + sum((n - 1) * s for n, s in zip(
            t.shape, t.stride()))) * t.element_size()

    outputs = [t for t in captured.outputs if t is not None]
    kept = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
            for t in outputs]
    moves = ([(s.data_ptr(), t.data_ptr(), span(t)) for s, t in zip(captured.inputs, inputs)],
             [(k.data_ptr(), t.data_ptr(), span(t)) for k, t in zip(kept, outputs)])
    replay = captured.graph.replay
    stream = torch.cuda.current_stream().cuda_stream

    def call():
        for to, frm, n in moves[0]:
            copy(to, frm, n, 3, stream)
        replay()
        for to, frm, n in moves[1]:
            copy(to, frm, n, 3, stream)
    return call


def measure_one(name, calls, repeats, device, cuda_graphs=False):
    """All variants for one model, in this process."""
    import torch

    import aoti_cy
    from aoti_cy._package import open_artifact

    path, args, kwargs, inputs, eager = load_case(name, device)
    model = aoti_cy.load(path)
    unchecked = aoti_cy.load(path, check_inputs=False)
    compiled = torch._inductor.aoti_load_package(path)
    loader = compiled.loader
    sync = (lambda: None) if device == "cpu" else torch.cuda.synchronize
    timed = {}   # name -> fn(calls) -> us per call
    if device == "cpu":
        import build
        floor_lib = ctypes.CDLL(build.build())
        floor_lib.aoti_c_floor.restype = ctypes.c_int
        artifact = open_artifact(path)   # the floor opens its own copy of the .so
        ndims = (ctypes.c_int * len(inputs))(*[t.dim() for t in inputs])
        flat = [s for t in inputs for s in t.shape]
        sizes = (ctypes.c_int64 * max(len(flat), 1))(*flat)
        result = (ctypes.c_double * 1)()

        def floor(n):
            status = floor_lib.aoti_c_floor(
                artifact.library_path.encode(), len(inputs), ndims, sizes,
                model.num_outputs, ctypes.c_long(n), 1, result)
            if status != 0:
                raise RuntimeError(f"c_floor failed with {status}")
            return result[0]

        loop = build.build_nogil_loop().run_loop

        def nogil(n):
            start = time.perf_counter()
            loop(model, inputs, n)
            return (time.perf_counter() - start) / n * 1e6

        timed[FLOOR], timed[NOGIL] = floor, nogil
    variants = {RUN: lambda: model.run(inputs), CALL: lambda: model(*args, **kwargs),
                UNCHECKED: lambda: unchecked.run(inputs),
                LOADER: lambda: loader.run(inputs),
                COMPILED: lambda: compiled(*args, **kwargs),
                EAGER: lambda: eager(*args, **kwargs)}
    extra = []
    if device != "cpu":
        from aoti_cy.cuda_graphs import capture
        variants[GRAPH] = lambda captured=capture(model, inputs): captured.replay(*inputs)
    if device != "cpu" and cuda_graphs:
        graphs, extra = graph_variants(path, args, kwargs, inputs)
        variants.update(graphs)
    for key, fn in variants.items():
        timed[key] = lambda n, fn=fn: per_call_us(fn, n, sync)
    samples = {k: [] for k in timed}
    with torch.no_grad():
        for fn in timed.values():
            fn(max(calls // 10, 10))   # warm up
        for _ in range(repeats):
            for key, fn in timed.items():
                samples[key].append(fn(calls))
    for container in [model, unchecked, *extra]:
        container.close()
    return {"inputs": len(inputs), "outputs": model.num_outputs,
            "us_per_call": {k: statistics.median(v) for k, v in samples.items()}}


def run_all(models, calls, repeats, device, cuda_graphs=False, save=None):
    """Each model in a process of its own; each model's figures are printed
    (and passed to ``save`` with those so far) as soon as it is done, so a
    run cut short keeps what it measured."""
    results = {}
    for name in models:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([sys.executable, __file__, "--one", name, "--calls", str(calls),
                            "--repeats", str(repeats), "--device", device,
                            "--json", out.name] + ["--cuda-graphs"] * cuda_graphs,
                           check=True)
            with open(out.name) as f:
                results[name] = json.load(f)
        figures = ", ".join(f"{k} {v:.2f}" for k, v in results[name]["us_per_call"].items())
        print(f"{name}: {figures}", flush=True)
        if save is not None:
            save(results)
    return results


def print_table(results, device, calls, repeats):
    import torch
    where = (torch.cuda.get_device_name() if device != "cpu"
             else f"{platform.machine()}, {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {device} ({where}); median µs per call over "
          f"{repeats} x {calls} calls")
    columns = list(next(iter(results.values()))["us_per_call"])
    print("| model | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, r in results.items():
        row = r["us_per_call"]
        floor = row.get(FLOOR)
        cells = []
        for c in columns:
            over = f" (+{row[c] - floor:.2f})" if floor is not None and c != FLOOR else ""
            cells.append(f"{row[c]:.2f}{over}")
        print(f"| {name} ({r['inputs']} in, {r['outputs']} out) | " + " | ".join(cells) + " |")
    if G_BARE in columns:
        print("\nCUDA graphs (targets: model(...) never slower than run, and within "
              "3 µs of a bare replay with raw copies):")
        for name, r in results.items():
            row = r["us_per_call"]
            if G_BARE not in row:
                continue
            over = row[G_CALL] - row[G_RAW]
            met = over <= 3 and row[G_CALL] <= row[RUN]
            print(f"  {name}: model(...) {row[G_CALL]:.2f} = {row[G_CALL] / row[RUN]:.2f}x run "
                  f"{row[RUN]:.2f}; {over:+.2f} over a bare replay with raw copies "
                  f"{row[G_RAW]:.2f} ({'met' if met else 'NOT met'}); copies around the "
                  f"launch {row[G_AROUND]:.2f}; no copies {row[G_STATIC]:.2f} vs bare replay "
                  f"{row[G_BARE]:.2f}")
    if FLOOR in columns:
        print("\nTargets (overhead over the C floor):")
        for name, r in results.items():
            row = r["us_per_call"]
            extra = r["inputs"] + r["outputs"] - 2
            budget = 0.25 + 0.1 * extra
            run_over, call_over = row[RUN] - row[FLOOR], row[CALL] - row[FLOOR]
            print(f"  {name}: run +{run_over:.2f} µs (target {budget:.2f}: "
                  f"{'met' if run_over <= budget else 'NOT met'}), model(*args) "
                  f"+{call_over:.2f} µs (target 0.50: "
                  f"{'met' if call_over <= 0.5 else 'NOT met'}); torch loader.run "
                  f"+{row[LOADER] - row[FLOOR]:.2f}, AOTICompiledModel "
                  f"+{row[COMPILED] - row[FLOOR]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="add the CUDA graph columns (CUDA only)")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # the per-model process
    args = parser.parse_args()
    if args.one:
        result = measure_one(args.one, args.calls, args.repeats, args.device,
                             args.cuda_graphs)
        with open(args.json, "w") as f:
            json.dump(result, f)
        return

    def save(results):
        import torch
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                       "device": args.device, "calls": args.calls, "repeats": args.repeats,
                       "cuda_graphs": args.cuda_graphs,
                       "results": results}, f, indent=2)

    results = run_all(args.models.split(","), args.calls, args.repeats, args.device,
                      args.cuda_graphs, save if args.json else None)
    print_table(results, args.device, args.calls, args.repeats)


if __name__ == "__main__":
    main()
