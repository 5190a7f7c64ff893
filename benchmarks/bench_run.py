"""Per-call time of aoti_cy against torch's own AOTInductor runner, in one process.

For each model: aoti_cy ``run`` and ``container(*args)``, torch's
``aoti_load_package(p).loader.run``,
torch's ``AOTICompiledModel.__call__`` and eager PyTorch. Each repeat times
``--calls`` calls of every variant in turn (so drift hits all alike); the
figure is the median over ``--repeats`` repeats, in microseconds per call.
Prints a Markdown table and writes JSON with ``--json``.
"""

import argparse
import json
import platform
import statistics
import time

import torch

import aoti_cy
from aoti_cy.testing import EXAMPLES


def per_call_us(fn, calls, sync):
    """Mean time per call over ``calls`` calls; on CUDA the loop ends with a
    synchronize, so this is the time per completed call."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls * 1e6


def bench_model(name, calls, repeats, device):
    example = EXAMPLES[name]
    path = example.package(device)
    inputs = example.inputs(device)
    model = aoti_cy.load(path)
    compiled = torch._inductor.aoti_load_package(path)
    loader = compiled.loader
    eager = example.eager(device)
    variants = {
        "aoti_cy run": lambda: model.run(inputs),
        "aoti_cy container(*args)": lambda: model(*inputs),
        "torch loader.run": lambda: loader.run(inputs),
        "torch AOTICompiledModel()": lambda: compiled(*inputs),
        "eager (no_grad)": lambda: eager(*inputs),
    }
    sync = (lambda: None) if device == "cpu" else torch.cuda.synchronize
    if device != "cpu":
        from aoti_cy.cuda_graph import capture
        graph = capture(model, inputs)
        variants["aoti_cy CUDA graph replay"] = graph.replay
    samples = {k: [] for k in variants}
    with torch.no_grad():
        for fn in variants.values():
            per_call_us(fn, max(calls // 10, 10), sync)   # warm up
        for _ in range(repeats):
            for key, fn in variants.items():
                samples[key].append(per_call_us(fn, calls, sync))
    model.close()
    return {key: statistics.median(v) for key, v in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="add_one,multi_io,mlp")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    results = {name: bench_model(name, args.calls, args.repeats, args.device)
               for name in args.models.split(",")}
    columns = list(next(iter(results.values())))
    where = (torch.cuda.get_device_name() if args.device != "cpu"
             else platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {args.device} ({where}), "
          f"{torch.get_num_threads()} CPU threads; median us/call over {args.repeats} x "
          f"{args.calls} calls")
    print("| model | " + " | ".join(columns) + " | loader.run / aoti_cy |")
    print("|---" * (len(columns) + 2) + "|")
    for name, row in results.items():
        ratio = row["torch loader.run"] / row["aoti_cy run"]
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in columns)
              + f" | {ratio:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": args.device,
                       "where": where, "calls": args.calls,
                       "repeats": args.repeats, "us_per_call": results}, f, indent=2)


if __name__ == "__main__":
    main()
