"""Throughput of one container per GPU: one container on cuda:0 run from one
thread, against two containers (cuda:0 and cuda:1) run from two threads at
once, on a compute-bound model (a chain of square matmuls, several ms a call).

Each thread runs blocks of calls and synchronizes its own device after each
block; a block's time over its calls gives µs per call. Single and pair
measurements are interleaved, ``--repeats`` times, and the medians over every
block are reported, with calls/s, the ratio pair/single (≈2 when the GPUs
work independently) and ``torch.cuda.max_memory_allocated`` per device (peak
of torch's allocator since the start: inputs, outputs, workspaces).
Needs 2 GPUs; prints JSON with ``--json``.
"""

import argparse
import json
import statistics
import sys
import threading
import time

import torch

import aoti_cy
from aoti_cy.testing import Heavy, compile_package


def package(size, depth, batch):
    """A CUDA package of ``depth`` (batch x size) @ (size x size) matmuls."""
    example = torch.randn(batch, size, device="cuda:0")
    return compile_package(Heavy, [example], device="cuda:0", init_args=(size, depth))


def run_blocks(model, inputs, device, blocks, calls, start, times):
    """``blocks`` blocks of ``calls`` runs; appends each block's µs per call."""
    torch.cuda.set_device(device)       # a worker thread drives one GPU
    start.wait()
    for _ in range(blocks):
        begin = time.perf_counter()
        for _ in range(calls):
            model.run(inputs)
        torch.cuda.synchronize(device)
        times.append((time.perf_counter() - begin) * 1e6 / calls)


def measure(models, inputs, blocks, calls):
    """µs per call of each model's blocks, every model on its own thread at once."""
    start = threading.Barrier(len(models))
    times = [[] for _ in models]
    threads = [threading.Thread(target=run_blocks, args=(
        m, x, m.device, blocks, calls, start, t)) for m, x, t in zip(models, inputs, times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--blocks", type=int, default=10, help="blocks per repeat")
    parser.add_argument("--calls", type=int, default=10, help="calls per block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        sys.exit(f"bench_multi_gpu needs 2 CUDA GPUs, found {gpus}")
    torch.backends.cuda.matmul.allow_tf32 = False      # the same math on every run
    path = package(args.size, args.depth, args.batch)
    devices = [torch.device("cuda", i) for i in (0, 1)]
    inputs = [[torch.randn(args.batch, args.size, device=d)] for d in devices]
    models = [aoti_cy.load(path, device=d) for d in devices]
    try:
        for m, x in zip(models, inputs):                # warm up: kernels, workspaces
            with torch.cuda.device(m.device):
                m.run(x)
            torch.cuda.synchronize(m.device)
        single, pair = [], [[], []]
        for _ in range(args.repeats):                   # interleaved
            single += measure(models[:1], inputs[:1], args.blocks, args.calls)[0]
            for mine, got in zip(pair, measure(models, inputs, args.blocks, args.calls)):
                mine += got
        peak = {str(d): torch.cuda.max_memory_allocated(d) for d in devices}
    finally:
        for m in models:
            m.close()
    single_us = statistics.median(single)
    pair_us = [statistics.median(t) for t in pair]
    single_rate = 1e6 / single_us
    pair_rate = sum(1e6 / us for us in pair_us)
    flops = 2 * args.batch * args.size * args.size * args.depth
    report = {
        "model": f"Heavy(size={args.size}, depth={args.depth}), batch {args.batch}",
        "gflop_per_call": flops / 1e9,
        "blocks": args.blocks * args.repeats, "calls_per_block": args.calls,
        "one_gpu": {"median_us": single_us, "calls_per_s": single_rate},
        "two_gpus": {"median_us": {str(d): us for d, us in zip(devices, pair_us)},
                     "calls_per_s": pair_rate},
        "ratio": pair_rate / single_rate,
        "max_memory_allocated": peak,
        "devices": [torch.cuda.get_device_name(d) for d in devices],
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['model']}: {report['gflop_per_call']:.0f} GFLOP a call")
    print(f"one GPU : {single_us:9.0f} µs/call  {single_rate:8.1f} calls/s")
    for d, us in zip(devices, pair_us):
        print(f"two GPUs: {us:9.0f} µs/call on {d}")
    print(f"two GPUs: {pair_rate:8.1f} calls/s in all, {report['ratio']:.2f}x one GPU")
    for d, nbytes in peak.items():
        print(f"max_memory_allocated({d}) = {nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
