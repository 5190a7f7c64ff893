"""Host memory of N containers of one CPU model: each with its own copy of
the weights, against all of them created over one set of the caller's
tensors (``external_constants=``, torch >= 2.14 models), in memory or
memory-mapped from a safetensors file (torch.save + mmap without safetensors).

Each scenario runs in a fresh process, repeated; figures are medians of the
memory each process added over its baseline (torch and aoti_cy imported,
inputs made): VmRSS (all resident memory), RssAnon (private: copies),
RssFile (file pages mapped, shared with the page cache and other processes
mapping the same file) and VmHWM (the peak). Weights given in memory are
counted once, in the scenario. Prints a table and, with --json, writes the
figures.

``--weightless`` compiles the package without any weights
(``package_constants_in_so=False``; the "copies" scenarios then copy them
into each container from the memory-mapped file): the way to ship a model
whose weights come from elsewhere. The first container of a library created over external constants
makes a short-lived ordinary container to learn the constants' names, dtypes
and shapes, which copies any weights the `.so` holds: that shows in VmHWM.

    python benchmarks/bench_shared_constants.py --containers 4 --width 4096
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

import aoti_cy
from aoti_cy.testing import MLP, compile_package, make_model

SCENARIOS = {
    "copies": "aoti_cy.load(path) N times: each container copies the weights",
    "torch_copies": "torch's aoti_load_package N times",
    "shared_in_memory": "weights read into memory once, N containers over them",
    "shared_mmap": "weights memory-mapped from a file, N containers over them",
}
UPDATABLE = {"always_keep_tensor_constants": True}
FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def memory():
    """The FIELDS of /proc/self/status, in bytes."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in FIELDS:
                found[key] = int(value.split()[0]) * 1024
    return found


def package(width, weightless):
    x = torch.randn(4, width, generator=torch.Generator().manual_seed(1))
    configs = dict(UPDATABLE)
    if weightless:
        configs["aot_inductor.package_constants_in_so"] = False
    return compile_package(MLP, [x], init_args=(width,), inductor_configs=configs)


def write_weights(path, width, directory):
    """The model's constants (from its own module) in a file; its path."""
    with aoti_cy.load(path) as model:
        fqns = set(model.constant_fqns)
    module = make_model(MLP, (width,))
    values = dict(module.state_dict(), **dict(module.named_buffers()))
    constants = {k: v.detach().contiguous() for k, v in values.items() if k in fqns}
    try:
        import safetensors.torch
        file = os.path.join(directory, "weights.safetensors")
        safetensors.torch.save_file(constants, file)
    except ImportError:
        file = os.path.join(directory, "weights.pt")
        torch.save(constants, file)
    return file


def read_weights(file, mmap):
    if file.endswith(".safetensors"):
        import safetensors.torch
        if mmap:
            return safetensors.torch.load_file(file)
        with open(file, "rb") as f:
            return safetensors.torch.load(f.read())
    return torch.load(file, mmap=mmap, weights_only=True)


def child(scenario, path, weights_file, count, width, weightless):
    """One scenario in this process: print the memory it added, as JSON."""
    x = torch.randn(4, width, generator=torch.Generator().manual_seed(1))
    before = memory()
    if scenario == "copies":
        models = [aoti_cy.load(path) for _ in range(count)]
        if weightless:
            constants = read_weights(weights_file, mmap=True)
            for m in models:
                m.update_constant_buffer(constants, validate_full_update=True)
    elif scenario == "torch_copies":
        models = [torch._inductor.aoti_load_package(path) for _ in range(count)]
        if weightless:
            constants = read_weights(weights_file, mmap=True)
            for m in models:
                m.load_constants(constants, check_full_update=True)
    else:
        constants = read_weights(weights_file, mmap=scenario == "shared_mmap")
        models = [aoti_cy.load(path, external_constants=constants) for _ in range(count)]
    # One run each: whatever a first run allocates is counted.
    sums = [float(m(x).double().sum()) for m in models]
    after = memory()
    print(json.dumps({"added": {k: after[k] - before[k] for k in FIELDS},
                      "output_sums": sums}))


def run_child(scenario, path, weights_file, count, width, weightless):
    command = [sys.executable, __file__, "--child", scenario, "--package", path,
               "--weights", weights_file, "--containers", str(count), "--width", str(width)]
    result = subprocess.run(command + ["--weightless"] * weightless,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"scenario {scenario} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weightless", action="store_true",
                        help="compile the package without weights in its .so")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.package, args.weights, args.containers, args.width,
              args.weightless)
        return
    path = package(args.width, args.weightless)
    with aoti_cy.load(path) as model:
        if not model.library.exported()["AOTInductorModelContainerCreateWithExternalConstants"]:
            sys.exit(f"models of torch {torch.__version__} cannot be created over external "
                     f"constants (torch >= 2.14 is needed)")
        weight_bytes = sum(c.data_size for c in model.constants)
    with tempfile.TemporaryDirectory() as directory:
        weights_file = write_weights(path, args.width, directory)
        results = {}
        for scenario in SCENARIOS:
            runs = [run_child(scenario, path, weights_file, args.containers, args.width,
                              args.weightless) for _ in range(args.repeats)]
            results[scenario] = {
                "description": SCENARIOS[scenario],
                **{k: statistics.median(r["added"][k] for r in runs) for k in FIELDS},
                "output_sums": runs[0]["output_sums"]}
    sums = [s for r in results.values() for s in r["output_sums"]]
    assert max(sums) - min(sums) <= 1e-6 * max(1.0, abs(sums[0])), f"outputs differ: {sums}"
    report = {"torch": torch.__version__, "containers": args.containers,
              "weights_in_so": not args.weightless,
              "weights_bytes": weight_bytes, "weights_file": os.path.basename(weights_file),
              "repeats": args.repeats, "scenarios": results}
    mib = 1 << 20
    print(f"torch {torch.__version__}: {args.containers} containers of an MLP with "
          f"{weight_bytes / mib:.1f} MiB of weights "
          f"({'none in its package' if args.weightless else 'in its .so'}); MiB added per process "
          f"(median of {args.repeats})")
    print(f"{'scenario':18} " + " ".join(f"{k:>8}" for k in FIELDS))
    for name, r in results.items():
        print(f"{name:18} " + " ".join(f"{r[k] / mib:8.1f}" for k in FIELDS))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
