"""Per-call time on real architectures (the random-initialised `transformers`
models of tests/real_models.py), aoti_cy against torch's own loader on the
same package, in one process.

Each repeat times ``--calls`` calls of every variant in turn (so drift hits
all alike); figures are medians over ``--repeats`` repeats, in µs per call:
aoti_cy ``run`` and ``model(*args, **kwargs)``, torch
``aoti_load_package(p).loader.run`` and ``aoti_load_package(p)(*args,
**kwargs)``, and eager PyTorch under no_grad. On CUDA each loop ends with a
synchronize.

    python benchmarks/bench_real_models.py [--device cuda] [--json out.json]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

RUN, CALL = "aoti_cy run", "aoti_cy model(...)"
LOADER, COMPILED, EAGER = "torch loader.run", "torch AOTICompiledModel()", "eager (no_grad)"
COLUMNS = (RUN, CALL, LOADER, COMPILED, EAGER)


def measure(name, device, calls, repeats):
    import torch
    import torch.utils._pytree as pytree

    import aoti_cy
    from real_models import REAL_MODELS, UPDATABLE

    real = REAL_MODELS[name]
    path = real.package(device, **UPDATABLE)
    args, kwargs = real.call(device=device)
    flat = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
    model = aoti_cy.load(path)
    compiled = torch._inductor.aoti_load_package(path)
    eager = real.eager(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def eager_call():
        with torch.no_grad():
            eager(*args, **kwargs)

    variants = {
        RUN: lambda: model.run(flat),
        CALL: lambda: model(*args, **kwargs),
        LOADER: lambda: compiled.loader.run(flat),
        COMPILED: lambda: compiled(*args, **kwargs),
        EAGER: eager_call,
    }
    samples = {k: [] for k in variants}
    for fn in variants.values():   # warm up
        for _ in range(max(calls // 10, 3)):
            fn()
    sync()
    for _ in range(repeats):
        for key, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            samples[key].append((time.perf_counter() - start) / calls * 1e6)
    model.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="resnet,vit,llama,bert,gpt2,gpt2_custom_op")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json")
    options = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch
    results = {}
    print(f"| model | {' | '.join(COLUMNS)} | run vs loader.run |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name in options.models.split(","):
        figures = measure(name, options.device, options.calls, options.repeats)
        results[name] = figures
        ratio = figures[LOADER] / figures[RUN]
        print(f"| {name} | " + " | ".join(f"{figures[c]:.1f}" for c in COLUMNS)
              + f" | {ratio:.2f}x |", flush=True)
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"machine": platform.platform(), "python": platform.python_version(),
                       "torch": torch.__version__, "device": options.device,
                       "calls": options.calls, "repeats": options.repeats,
                       "us_per_call": results}, f, indent=2)


if __name__ == "__main__":
    main()
