"""``python -m aoti_cy bench``: per-call latency of aoti_cy, beside torch's
own loader on the same package.

Numbers that are compared are taken in one process, interleaved: each repeat
times a block of calls of every variant in turn (the order rotating), so a
machine that slows down or speeds up mid-run moves every variant alike.
torch's loader crashes the process on some packages (it segfaults at the first
run of a ``pickle_weights`` package or one without weights), so with
``compare_torch`` the whole interleaved measurement runs in a child process
(``python -m aoti_cy.cli.bench CONFIG``) that prints its report as JSON. If the
child dies, this process times aoti_cy alone and the report says that torch
crashed, and with which signal.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

__all__ = ["bench", "compare_line"]


class BenchUsageError(ValueError):
    """Bad bench options or inputs (a usage error on the command line)."""


def _import_modules(modules):
    import importlib
    for name in modules or ():
        importlib.import_module(name)


def load_call(path):
    """(args, kwargs) from a ``torch.save``d file: a list of tensors (the
    positional arguments) or a pair ``(args, kwargs)``."""
    import torch
    if not os.path.exists(path):
        raise BenchUsageError(
            f"no inputs: pass --inputs FILE (a torch.save'd list of tensors, or a pair "
            f"(args, kwargs)); {path} does not exist")
    saved = torch.load(path, weights_only=True)
    if (isinstance(saved, tuple) and len(saved) == 2 and isinstance(saved[0], (list, tuple))
            and isinstance(saved[1], dict)):
        return tuple(saved[0]), dict(saved[1])
    if isinstance(saved, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in saved):
        return tuple(saved), {}
    raise BenchUsageError(f"{path} must hold a list of tensors or a pair (args, kwargs)")


def _to(value, device):
    import torch
    import torch.utils._pytree as pytree
    return pytree.tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, value)


# ---- timing --------------------------------------------------------------------


def _timed_block(call, count, threads):
    """Per-call latencies (s) of ``count`` calls spread over ``threads``,
    and the wall time of the block."""
    latencies = []
    shares = [count // threads + (i < count % threads) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)
    errors = []

    def worker(n):
        local = []
        clock = time.perf_counter
        barrier.wait()
        try:
            for _ in range(n):
                start = clock()
                call()
                local.append(clock() - start)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
        latencies.extend(local)

    workers = [threading.Thread(target=worker, args=(n,)) for n in shares]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return latencies, wall


def time_interleaved(variants, *, iters, repeats, warmup, threads, progress=False):
    """Time every callable of ``variants`` (name -> call) for ``iters``
    calls in ``repeats`` blocks each, interleaved; a summary per name."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    block = max(1, iters // repeats)
    latencies = {n: [] for n in names}
    walls = {n: 0.0 for n in names}
    medians = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            found, wall = _timed_block(variants[name], block, threads)
            latencies[name] += found
            walls[name] += wall
            medians[name].append(statistics.median(found))
        if progress:
            sys.stderr.write(f"\r  repeat {r + 1}/{repeats}")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    return {name: _summary(latencies[name], walls[name], medians[name]) for name in names}


def _summary(latencies, wall, block_medians):
    ordered = sorted(latencies)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6

    return {"calls": len(ordered), "p50_us": statistics.median(ordered) * 1e6,
            "p90_us": pct(90), "p99_us": pct(99),
            "mean_us": statistics.fmean(ordered) * 1e6, "calls_per_s": len(ordered) / wall,
            "block_medians_us": [m * 1e6 for m in block_medians]}


# ---- what is timed ---------------------------------------------------------------


def _aoti_cy_variants(config, args, kwargs):
    """aoti_cy's timed calls and the containers they use (to close)."""
    import aoti_cy
    from aoti_cy._call import CallSpec
    model = aoti_cy.load(config["path"], model_name=config["model_name"],
                         num_models=config["num_models"])
    opened = [model]
    try:
        args, kwargs = _to(args, model.device), _to(kwargs, model.device)
        try:
            flat = CallSpec(*model.call_spec, model.num_inputs).flatten(args, kwargs)
            model(*args, **kwargs)
        except TypeError as e:
            hint = (" (here: --import MODULE)" if "not registered" in str(e)
                    or "no usable call spec" in str(e) else "")
            raise BenchUsageError(f"{e}{hint}") from None
        variants = {"aoti_cy run": lambda: model.run(flat),
                    "aoti_cy model(...)": lambda: model(*args, **kwargs)}
        if config.get("cuda_graphs"):
            variants[GRAPHS] = _graphed_call(config, model, opened, args, kwargs)
    except BaseException:
        for container in opened:
            container.close()
        raise
    return opened, flat, variants


def _graphed_call(config, model, opened, args, kwargs):
    """``model(...)`` of the package loaded with ``cuda_graphs=True``."""
    import warnings

    import aoti_cy
    from aoti_cy.cuda_graphs import GraphsUnavailable
    if model.device.type != "cuda":
        raise BenchUsageError(f"--cuda-graphs needs a CUDA model; this one runs on "
                              f"{model.device}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphsUnavailable)
        try:
            graphed = aoti_cy.load(config["path"], model_name=config["model_name"],
                                   num_models=config["num_models"], cuda_graphs=True)
            opened.append(graphed)
            graphed(*args, **kwargs)            # warm up and capture
        except GraphsUnavailable as e:
            raise BenchUsageError(f"--cuda-graphs: {e}") from None
    return lambda: graphed(*args, **kwargs)


def _torch_variants(config, args, kwargs, flat, device):
    from torch._inductor.package import load_package
    compiled = load_package(config["path"], model_name=config["model_name"],
                            num_runners=config["num_models"])
    args, kwargs = _to(args, device), _to(kwargs, device)
    return {"torch loader.run": lambda: compiled.loader.run(flat),
            "torch model(...)": lambda: compiled(*args, **kwargs)}


def measure(config, *, with_torch, progress=False):
    """The report of one measurement, in this process: aoti_cy's variants,
    and torch's interleaved with them when ``with_torch``. A Python error on
    torch's side is reported, and aoti_cy is timed alone."""
    import torch
    _import_modules(config["imports"])
    args, kwargs = load_call(config["inputs"])
    opened, flat, variants = _aoti_cy_variants(config, args, kwargs)
    device = opened[0].device
    report = {"torch_version": torch.__version__, "device": str(device)}
    try:
        if with_torch:
            try:
                variants.update(_torch_variants(config, args, kwargs, flat, device))
                for name in ("torch loader.run", "torch model(...)"):
                    variants[name]()        # fail here, before any timing
            except Exception as e:  # noqa: BLE001 - reported; aoti_cy still timed
                variants = {k: v for k, v in variants.items() if k.startswith("aoti_cy")}
                report["torch_error"] = f"{type(e).__name__}: {e}"
        if device.type == "cuda":
            variants = _until_ready(variants, device)
        report["results"] = time_interleaved(
            variants, iters=config["iters"], repeats=config["repeats"],
            warmup=config["warmup"], threads=config["threads"], progress=progress)
    finally:
        for container in opened:
            container.close()
    return report


def _until_ready(variants, device):
    """CUDA calls return before the GPU is done: time each one until its
    outputs are ready (a synchronize, the same cost in every variant)."""
    import torch
    sync = torch.cuda.synchronize

    def timed(call):
        def call_and_wait():
            call()
            sync(device)
        return call_and_wait
    return {name: timed(call) for name, call in variants.items()}


def _child_main(argv):
    config = json.loads(argv[0])
    report = measure(config, with_torch=True)
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    return 0


def _signal_name(returncode):
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def bench(config, *, compare_torch, progress=False):
    """The full report: with ``compare_torch``, from a child process timing
    both interleaved, or, when that child crashed, aoti_cy alone here."""
    report = {"path": os.path.abspath(config["path"]), "model_name": config["model_name"],
              "iters": config["iters"], "repeats": config["repeats"],
              "threads": config["threads"], "num_models": config["num_models"],
              "compared_with_torch": compare_torch}
    load_call(config["inputs"])     # a usage error here, not in the child
    if compare_torch:
        child = subprocess.run(
            [sys.executable, "-m", "aoti_cy.cli.bench", json.dumps(config)],
            capture_output=True, text=True)
        last = child.stdout.strip().rpartition("\n")[2]
        if child.returncode == 0 and last.startswith("{"):
            report.update(json.loads(last), measured_in="a child process (both interleaved)")
            report["comparisons"] = comparisons(report["results"])
            return report
        if child.returncode < 0:
            report["torch_crash"] = (f"the process timing torch's loader died of "
                                     f"{_signal_name(child.returncode)}")
        else:
            tail = child.stderr.strip().splitlines()[-1:] or ["(no message)"]
            report["torch_crash"] = (f"the process timing torch's loader failed "
                                     f"(exit {child.returncode}): {tail[0]}")
    report.update(measure(config, with_torch=False, progress=progress),
                  measured_in="this process (aoti_cy alone)")
    report["comparisons"] = []
    return report


# ---- wording -------------------------------------------------------------------


GRAPHS = "aoti_cy graphs model(...)"
PAIRS = (("aoti_cy run", "torch loader.run"), ("aoti_cy model(...)", "torch model(...)"),
         (GRAPHS, "torch model(...)"))


def comparisons(results):
    """One dict per pair timed: ratio of torch's median to aoti_cy's, its
    range over the repeats, and a sentence that says which was faster."""
    found = []
    for ours, theirs in PAIRS:
        if ours not in results or theirs not in results:
            continue
        a, t = results[ours], results[theirs]
        ratio = t["p50_us"] / a["p50_us"]
        per_repeat = [tm / am for am, tm in zip(a["block_medians_us"], t["block_medians_us"])]
        low, high = _quartiles(per_repeat)
        found.append({"aoti_cy": ours, "torch": theirs, "torch_over_aoti_cy": ratio,
                      "repeats_quartiles": [low, high],
                      "text": compare_line(ours, theirs, ratio, low, high)})
    return found


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, high


def compare_line(ours, theirs, ratio, low, high):
    """``aoti_cy run is 1.23x faster than torch loader.run`` or ``... slower
    ...`` by the ratio of the medians, or no clear difference when the middle
    half of the per-repeat ratios (``low``..``high``) holds 1."""
    spread = f"medians per call; middle half of the repeats {low:.2f}x to {high:.2f}x"
    if low <= 1 <= high:
        return (f"{ours} vs {theirs}: no clear difference (torch takes {ratio:.2f}x "
                f"aoti_cy's time; {spread})")
    if ratio > 1:
        return f"{ours} is {ratio:.2f}x faster than {theirs} ({spread})"
    return f"{ours} is {1 / ratio:.2f}x slower than {theirs} ({spread})"


def format_report(report):
    lines = [f"{report['path']} (model {report['model_name']!r}, {report['device']}): "
             f"{report['repeats']} repeats x {report['iters'] // report['repeats']} calls "
             f"per variant, {report['threads']} thread(s), num_models={report['num_models']}, "
             f"torch {report['torch_version']}",
             f"measured in {report['measured_in']}"]
    if report["device"].startswith("cuda"):
        lines.append("each CUDA call is timed until its outputs are ready (a synchronize "
                     "after every call, in every variant)")
    if report.get("torch_crash"):
        lines.append(f"torch crashed: {report['torch_crash']}; aoti_cy's figures below "
                     f"are from this process, without torch")
    if report.get("torch_error"):
        lines.append(f"torch failed: {report['torch_error']}; aoti_cy timed alone")
    width = max(map(len, report["results"]))
    lines.append(f"  {'variant':<{width}} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} "
                 f"{'calls/s':>11}")
    for name, r in report["results"].items():
        lines.append(f"  {name:<{width}} {r['p50_us']:9.2f} {r['p90_us']:9.2f} {r['p99_us']:9.2f} "
                     f"{r['calls_per_s']:11.0f}")
    for c in report.get("comparisons", []):
        lines.append("  " + c["text"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
