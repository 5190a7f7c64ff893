"""Memory and loading: RSS growth over many calls, host memory a loaded
package keeps, and load time, against torch's loader where it applies.
With ``--cuda-graph-execs N`` (a GPU): only the device memory a graphed
container's executable graph of copy nodes takes beside torch's own.

Prints one JSON object. RSS is read from /proc/self/statm; device memory
from ``torch.cuda.mem_get_info``.
"""

import argparse
import gc
import json
import os
import statistics
import time

import torch

import aoti_cy
from aoti_cy.testing import EXAMPLES, MLP, compile_package

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def rss_growth_over_calls(calls):
    example = EXAMPLES["add_one"]
    inputs = example.inputs()
    with aoti_cy.load(example.package()) as model:
        for _ in range(100_000):   # warm up allocator caches
            model.run(inputs)
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        for _ in range(calls):
            model.run(inputs)
        seconds = time.perf_counter() - start
        gc.collect()
        return {"calls": calls, "rss_growth_bytes": rss_bytes() - before,
                "seconds": seconds}


def rss_growth_over_failing_calls(calls):
    """RSS growth over calls that fail: wrong shape, rank, dtype, count, type."""
    example = EXAMPLES["multi_io"]
    good = example.inputs()
    bad = [[good[0][:2], good[1], good[2]], [good[0][None], good[1], good[2]],
           [good[0].double(), good[1], good[2]], good[:2], [good[0], None, good[2]]]
    fds = len(os.listdir("/proc/self/fd"))
    with aoti_cy.load(example.package()) as model:
        def fail(n):
            for i in range(n):
                try:
                    model.run(bad[i % len(bad)])
                except (ValueError, TypeError):
                    pass
                else:
                    raise AssertionError("a bad call succeeded")
        fail(10_000)   # warm up
        gc.collect()
        before = rss_bytes()
        fail(calls)
        gc.collect()
        return {"calls": calls, "rss_growth_bytes": rss_bytes() - before,
                "open_files_growth": len(os.listdir("/proc/self/fd")) - fds}


def load_footprint(width):
    """RSS a loaded package adds, beside the bytes of its weights."""
    path = compile_package(MLP, [torch.randn(4, width)], init_args=(width,))
    gc.collect()
    before = rss_bytes()
    model = aoti_cy.load(path)
    (x,) = [torch.randn(4, width)]
    model.run([x])
    loaded = rss_bytes() - before
    weights = sum(c.data_size for c in model.constants)
    model.close()
    return {"weights_bytes": weights, "rss_added_bytes": loaded,
            "ratio": loaded / weights}


def load_times(loads):
    path = EXAMPLES["mlp"].package()
    times = []
    for _ in range(loads):
        start = time.perf_counter()
        model = aoti_cy.load(path)
        times.append(time.perf_counter() - start)
        model.close()
    start = time.perf_counter()
    torch._inductor.aoti_load_package(path)
    torch_first = time.perf_counter() - start
    return {"aoti_cy_median_ms": statistics.median(times) * 1e3,
            "torch_first_load_ms": torch_first * 1e3}


def graph_exec_memory(containers, repeats=3):
    """Device memory per graph taken by the executable graph that holds a
    call's copy nodes (``copies_in_graph``, the default) beside torch's own,
    as the difference between ``containers`` mlp containers of one graph
    each with the copies in the graph and as many with the copies around
    the launch; median over ``repeats`` rounds, each arm in turn."""
    example = EXAMPLES["mlp"]
    path = example.package("cuda")
    inputs = example.inputs("cuda")

    def bytes_per_container(copies_in_graph):
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        free_before, _ = torch.cuda.mem_get_info()
        models = [aoti_cy.load(path, cuda_graphs=True) for _ in range(containers)]
        for model in models:
            model.cuda_graphs.copies_in_graph = copies_in_graph
            model.run(inputs)                        # captures its graph
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free_after, _ = torch.cuda.mem_get_info()
        assert all(g.copies_in_graph == copies_in_graph
                   for model in models for (g,) in model.cuda_graphs.graphs())
        for model in models:
            model.close()
        return (free_before - free_after) / containers

    bytes_per_container(False)                       # first-load work, not counted
    around, inside = [], []
    for _ in range(repeats):
        around.append(bytes_per_container(False))
        inside.append(bytes_per_container(True))
    return {"device": torch.cuda.get_device_name(), "containers": containers,
            "repeats": repeats,
            "bytes_per_container_copies_around": statistics.median(around),
            "bytes_per_container_copies_in_graph": statistics.median(inside),
            "copy_graph_exec_bytes": statistics.median(inside) - statistics.median(around)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--failing-calls", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--cuda-graph-execs", type=int, default=0, metavar="N",
                        help="only measure the copy graph's device memory over N containers")
    args = parser.parse_args()
    if args.cuda_graph_execs:
        print(json.dumps({"torch": torch.__version__,
                          "cuda_graph_exec_memory": graph_exec_memory(args.cuda_graph_execs)},
                         indent=2))
        return
    print(json.dumps({
        "torch": torch.__version__,
        "load_time": load_times(args.loads),
        "rss_over_calls": rss_growth_over_calls(args.calls),
        "rss_over_failing_calls": rss_growth_over_failing_calls(args.failing_calls),
        "load_footprint": load_footprint(args.width),
    }, indent=2))


if __name__ == "__main__":
    main()
