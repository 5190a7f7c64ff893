"""Command line: ``python -m aoti_cy {inspect,bench,demo}``.

Exit codes: 0 success, 1 a failure (printed without a traceback unless
``--debug``), 2 a usage error.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


# ---- inspect -------------------------------------------------------------------


def inspect_command(args):
    """Show what a package holds: models, device, inputs and outputs, call
    spec, constants, and which optional ABI entry points the .so exports."""
    import torch.utils._pytree as pytree

    import aoti_cy
    from aoti_cy._package import list_models

    with aoti_cy.load(args.path, model_name=args.model_name) as model:
        models = list_models(args.path)
        specs = []
        for text in model.call_spec:
            try:
                specs.append(str(pytree.treespec_loads(text)))
            except Exception:
                specs.append(text or "(none)")
        report = {
            "path": os.path.abspath(args.path),
            "models": list(models),
            "model_name": args.model_name,
            "library": model.library_path,
            "device": str(model.device),
            "metadata": model.metadata,
            "inputs": list(model.input_names),
            "outputs": list(model.output_names),
            "in_spec": specs[0],
            "out_spec": specs[1],
            "constants": [
                {"name": c.name, "fqn": c.original_fqn, "dtype": str(c.dtype).replace("torch.", ""),
                 "bytes": c.data_size, "folded": c.from_folded}
                for c in model.constants],
            "exports": model.library.exported(),
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_format_inspect(report))
    return 0


def _format_inspect(r):
    lines = [f"package   {r['path']}",
             f"models    {', '.join(r['models']) or '(bare library)'}  (showing {r['model_name']!r})",
             f"library   {r['library']}",
             f"device    {r['device']}"]
    for key, value in sorted(r["metadata"].items()):
        lines.append(f"  {key} = {value}")
    lines.append(f"inputs    {len(r['inputs'])}: {', '.join(r['inputs'])}")
    lines.append(f"outputs   {len(r['outputs'])}: {', '.join(r['outputs'])}")
    lines.append("in_spec   " + r["in_spec"].replace("\n", "\n          "))
    lines.append("out_spec  " + r["out_spec"].replace("\n", "\n          "))
    lines.append(f"constants {len(r['constants'])}")
    if r["constants"]:
        rows = [("name", "fqn", "dtype", "bytes", "folded")] + [
            (c["name"], c["fqn"], c["dtype"], str(c["bytes"]), "yes" if c["folded"] else "no")
            for c in r["constants"]]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    lines.append("optional ABI entry points")
    for name, present in r["exports"].items():
        lines.append(f"  {'yes' if present else 'no '}  {name}")
    return "\n".join(lines)


# ---- bench ---------------------------------------------------------------------


def _load_inputs(args):
    import torch
    path = args.inputs or args.path + ".inputs.pt"
    if not os.path.exists(path):
        raise UsageError(
            f"no inputs: pass --inputs FILE (a torch.save'd list of tensors); "
            f"{path} does not exist")
    inputs = torch.load(path, weights_only=True)
    if not isinstance(inputs, (list, tuple)) or not all(
            isinstance(t, torch.Tensor) for t in inputs):
        raise UsageError(f"{path} must hold a list of tensors")
    return list(inputs)


def _timed(run, inputs, iters, threads, progress):
    """Per-call latencies (s) of ``iters`` calls spread over ``threads``, and
    the wall time of the whole."""
    latencies = []
    done = [0]
    per_thread = [iters // threads + (i < iters % threads) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(count):
        local = []
        barrier.wait()
        clock = time.perf_counter
        for _ in range(count):
            start = clock()
            run(inputs)
            local.append(clock() - start)
            done[0] += 1
        latencies.extend(local)

    workers = [threading.Thread(target=worker, args=(n,)) for n in per_thread]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    while any(w.is_alive() for w in workers):
        if progress:
            _draw_progress(done[0], iters)
        workers[0].join(0.2)
    wall = time.perf_counter() - start
    for w in workers:
        w.join()
    if progress:
        _draw_progress(iters, iters)
        sys.stderr.write("\n")
    return latencies, wall


def _draw_progress(done, total, width=40):
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def _summary(latencies, wall, iters):
    ordered = sorted(latencies)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6

    return {"p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
            "mean_us": statistics.fmean(latencies) * 1e6,
            "calls_per_s": iters / wall}


def bench_command(args):
    """Time runs of a package: latency percentiles and throughput, optionally
    beside torch's own loader in the same process."""
    import torch

    import aoti_cy

    if args.iters < 1 or args.threads < 1:
        raise UsageError("--iters and --threads must be positive")
    inputs = _load_inputs(args)
    progress = sys.stderr.isatty() and not args.json
    results = {}
    with aoti_cy.load(args.path, num_models=args.num_models) as model:
        inputs = [t.to(model.device) for t in inputs]
        for _ in range(args.warmup):
            model.run(inputs)
        results["aoti_cy run"] = _summary(
            *_timed(model.run, inputs, args.iters, args.threads, progress), args.iters)
    if args.compare_torch:
        from torch._inductor.package import load_package
        loader = load_package(args.path, num_runners=args.num_models).loader
        for _ in range(args.warmup):
            loader.run(inputs)
        results["torch loader.run"] = _summary(
            *_timed(loader.run, inputs, args.iters, args.threads, progress), args.iters)
    report = {"path": os.path.abspath(args.path), "iters": args.iters,
              "threads": args.threads, "num_models": args.num_models,
              "torch": torch.__version__, "results": results}
    if args.compare_torch:
        ours, theirs = results["aoti_cy run"], results["torch loader.run"]
        report["torch_over_aoti_cy"] = {
            "p50": theirs["p50_us"] / ours["p50_us"],
            "throughput": ours["calls_per_s"] / theirs["calls_per_s"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['path']}: {args.iters} calls on {args.threads} thread(s), "
          f"num_models={args.num_models}, torch {torch.__version__}")
    print(f"  {'runner':<18} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'calls/s':>11}")
    for name, r in results.items():
        print(f"  {name:<18} {r['p50_us']:9.2f} {r['p90_us']:9.2f} {r['p99_us']:9.2f} "
              f"{r['calls_per_s']:11.0f}")
    if args.compare_torch:
        ratio = report["torch_over_aoti_cy"]
        print(f"  torch / aoti_cy: p50 {ratio['p50']:.2f}x, throughput "
              f"{ratio['throughput']:.2f}x in favour of aoti_cy")
    return 0


# ---- demo ----------------------------------------------------------------------


def demo_command(args):
    """Compile a small built-in model, load it with aoti_cy, run it, compare
    with eager PyTorch and print what happened."""
    import torch

    import aoti_cy
    from aoti_cy.testing import EXAMPLES, cache_dir

    example = EXAMPLES["mlp"]
    print(f"aoti_cy {aoti_cy.__version__} (built for torch {aoti_cy.BUILT_FOR_TORCH}), "
          f"torch {torch.__version__}")
    print(f"1. compiling the demo model (MLP 64->64->8) with AOTInductor "
          f"(cached in {cache_dir()}) ...")
    start = time.perf_counter()
    path = example.package()
    print(f"   package: {path} ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    model = aoti_cy.load(path)
    print(f"2. loaded in {(time.perf_counter() - start) * 1e3:.1f} ms: {model}")
    print(f"   inputs {model.input_names}, outputs {model.output_names}, device {model.device}")
    print("   constants: " + ", ".join(
        f"{c.original_fqn} {c.dtype} {c.data_size} B" for c in model.constants))

    inputs = example.inputs()
    output = model(*inputs)
    with torch.no_grad():
        expected = example.eager()(*inputs)
    error = (output - expected).abs().max().item()
    print(f"3. ran on input {tuple(inputs[0].shape)}: output {tuple(output.shape)}, "
          f"max |aoti_cy - eager| = {error:.2e}")
    torch.testing.assert_close(output, expected)

    start = time.perf_counter()
    for _ in range(args.calls):
        model.run(inputs)
    per_call = (time.perf_counter() - start) / args.calls * 1e6
    print(f"4. {args.calls} more runs: {per_call:.1f} us per call")
    model.close()
    print("OK: aoti_cy output matches eager PyTorch")
    return 0


# ---- entry point -------------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(prog="python -m aoti_cy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("inspect", help=inspect_command.__doc__.splitlines()[0])
    p.add_argument("path", help="a .pt2, an extracted package directory or a model .so")
    p.add_argument("--model-name", default="model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=inspect_command)

    p = commands.add_parser("bench", help=bench_command.__doc__.splitlines()[0])
    p.add_argument("path", help="a .pt2, an extracted package directory or a model .so")
    p.add_argument("--inputs", help="torch.save'd list of input tensors "
                                    "(default: PATH.inputs.pt)")
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="Python threads calling at once; pair with --num-models and "
                        "OMP_NUM_THREADS so threads x OpenMP threads <= cores")
    p.add_argument("--num-models", type=int, default=1)
    p.add_argument("--compare-torch", action="store_true",
                   help="also time torch's own loader in this process")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=bench_command)

    p = commands.add_parser("demo", help=demo_command.__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=10000)
    p.set_defaults(run=demo_command)
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        parser.error(str(e))   # exits 2
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
