"""Throughput of one container run from two Python threads, num_models 1 and 2
(by default on the ~1 ms matmul model).

Run with OMP_NUM_THREADS=1 (set below before torch loads) so that each run
uses one core and the speed-up comes from running two models at once.
Prints one JSON object: seconds for N runs on one thread, and for N runs on
each of two threads, per num_models, and the speed-up 2*one/two.

With ``--device cuda`` each thread runs on a CUDA stream of its own and
waits for it at the end; ``--cuda-graphs`` adds the same figures for a
container loaded with ``cuda_graphs=True`` (one graph set per model
instance).
"""

import argparse
import json
import os
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import aoti_cy  # noqa: E402
from bench_run import load_case  # noqa: E402


def timed_runs(run, inputs, iters, threads):
    barrier = threading.Barrier(threads + 1)
    cuda = inputs[0].is_cuda

    def worker():
        stream = torch.cuda.Stream() if cuda else None
        barrier.wait()
        if cuda:
            with torch.cuda.stream(stream):
                for _ in range(iters):
                    run(inputs)
            stream.synchronize()
            return
        for _ in range(iters):
            run(inputs)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def measure(path, inputs, iters, num_models, repeats, cuda_graphs=False):
    with aoti_cy.load(path, num_models=num_models, cuda_graphs=cuda_graphs) as model:
        for _ in range(2 * num_models):
            timed_runs(model.run, inputs, 1, num_models)   # captures every graph set
        one = min(timed_runs(model.run, inputs, iters, 1) for _ in range(repeats))
        two = min(timed_runs(model.run, inputs, iters, 2) for _ in range(repeats))
    return {"one_thread_s": one, "two_threads_s": two, "speedup": 2 * one / two}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="matmul",
                        help="a model name of bench_run.py (launch_bound, mlp, llama, ...)")
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch", action="store_true",
                        help="also measure torch's aoti_load_package loader")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also measure containers with cuda_graphs=True (CUDA)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path, _, _, inputs, _ = load_case(args.model, args.device)
    result = {f"aoti_cy_num_models_{n}": measure(path, inputs, args.iters, n, args.repeats)
              for n in (1, 2)}
    if args.cuda_graphs:
        result.update({f"aoti_cy_cuda_graphs_num_models_{n}": measure(
            path, inputs, args.iters, n, args.repeats, cuda_graphs=True) for n in (1, 2)})
    if args.torch:
        from torch._inductor.package import load_package
        loader = load_package(path, num_runners=2).loader
        loader.run(inputs)
        one = min(timed_runs(loader.run, inputs, args.iters, 1) for _ in range(args.repeats))
        two = min(timed_runs(loader.run, inputs, args.iters, 2) for _ in range(args.repeats))
        result["torch_loader_num_runners_2"] = {
            "one_thread_s": one, "two_threads_s": two, "speedup": 2 * one / two}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
