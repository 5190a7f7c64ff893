"""Loading a package that ships C++ sources only (package_cpp_only=True):
aoti_cy's first load (it builds the library) against a load that finds it in
the build cache, and torch's loader (which builds it at every load).

Each repeat builds into a fresh cache folder. Prints one JSON object; times
in seconds (medians).
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

import aoti_cy
from aoti_cy.testing import MLP, compile_package


def timed(load):
    start = time.perf_counter()
    load()   # the model is freed on return
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--builds", type=int, default=2)
    parser.add_argument("--cached", type=int, default=20)
    parser.add_argument("--torch", type=int, default=1)
    options = parser.parse_args()
    path = compile_package(MLP, [torch.randn(16, 64)],
                           inductor_configs={"aot_inductor.package_cpp_only": True})
    first, cached = [], []
    for _ in range(options.builds):
        with tempfile.TemporaryDirectory() as folder:
            os.environ["AOTI_CY_BUILD_CACHE"] = folder
            first.append(timed(lambda: aoti_cy.aoti_load_package(path)))
            cached += [timed(lambda: aoti_cy.aoti_load_package(path))
                       for _ in range(options.cached)]
    theirs = [timed(lambda: torch._inductor.aoti_load_package(path))
              for _ in range(options.torch)]
    print(json.dumps({
        "model": "MLP (64->64->8), package_cpp_only",
        "aoti_cy_first_load_s": statistics.median(first), "aoti_cy_first_loads": first,
        "aoti_cy_cached_load_s": statistics.median(cached),
        "aoti_cy_cached_min_max_s": [min(cached), max(cached)],
        "torch_load_s": statistics.median(theirs), "torch_loads": theirs,
    }, indent=1))


if __name__ == "__main__":
    main()
