"""Per-call time of aoti_cy against the C floor and torch's own runner.

One entry point; each model is measured in a process of its own, where every
variant runs on the same inputs:

- C floor: ``floor/c_floor.cpp`` driving the model's C ABI in a loop, no Python;
- aoti_cy nogil loop: the cimport API (``floor/nogil_loop.pyx``), no GIL;
- aoti_cy ``run`` and ``model(*args)`` (input checks on, the default), and
  ``run`` of a container loaded with ``check_inputs=False``;
- torch ``aoti_load_package(p).loader.run`` and ``aoti_load_package(p)(*args)``;
- eager PyTorch.

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
GRAPH = "aoti_cy CUDA graph replay"
UNCHECKED = "aoti_cy run, check_inputs=False"


def per_call_us(fn, calls, sync):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls * 1e6


def measure_one(name, calls, repeats, device):
    """All variants for one model, in this process."""
    import torch

    import aoti_cy
    from aoti_cy._package import open_artifact
    from aoti_cy.testing import EXAMPLES

    example = EXAMPLES[name]
    path = example.package(device)
    inputs = example.inputs(device)
    model = aoti_cy.load(path)
    unchecked = aoti_cy.load(path, check_inputs=False)
    compiled = torch._inductor.aoti_load_package(path)
    loader = compiled.loader
    eager = example.eager(device)
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
    variants = {RUN: lambda: model.run(inputs), CALL: lambda: model(*inputs),
                UNCHECKED: lambda: unchecked.run(inputs),
                LOADER: lambda: loader.run(inputs), COMPILED: lambda: compiled(*inputs),
                EAGER: lambda: eager(*inputs)}
    if device != "cpu":
        from aoti_cy.cuda_graph import capture
        variants[GRAPH] = capture(model, inputs).replay
    for key, fn in variants.items():
        timed[key] = lambda n, fn=fn: per_call_us(fn, n, sync)
    samples = {k: [] for k in timed}
    with torch.no_grad():
        for fn in timed.values():
            fn(max(calls // 10, 10))   # warm up
        for _ in range(repeats):
            for key, fn in timed.items():
                samples[key].append(fn(calls))
    model.close()
    unchecked.close()
    return {"inputs": len(inputs), "outputs": model.num_outputs,
            "us_per_call": {k: statistics.median(v) for k, v in samples.items()}}


def run_all(models, calls, repeats, device):
    results = {}
    for name in models:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([sys.executable, __file__, "--one", name, "--calls", str(calls),
                            "--repeats", str(repeats), "--device", device,
                            "--json", out.name], check=True)
            with open(out.name) as f:
                results[name] = json.load(f)
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
    parser.add_argument("--one", help=argparse.SUPPRESS)   # the per-model process
    args = parser.parse_args()
    if args.one:
        result = measure_one(args.one, args.calls, args.repeats, args.device)
        with open(args.json, "w") as f:
            json.dump(result, f)
        return
    results = run_all(args.models.split(","), args.calls, args.repeats, args.device)
    print_table(results, args.device, args.calls, args.repeats)
    if args.json:
        import torch
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                       "device": args.device, "calls": args.calls, "repeats": args.repeats,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
