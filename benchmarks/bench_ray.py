"""Requests/s and p50/p99 latency of a Ray Serve deployment of one package:
1 vs 2 replicas, with and without dynamic batching, replicas running it
through aoti_cy or through torch's ``aoti_load_package`` (the same
``aoti_cy.ray`` deployment with ``runtime="torch"``: same routing, batching
and transport, only the loader differs).

Starts a local Ray cluster (``--cpus`` CPUs, one per replica), then for each
configuration deploys, warms up, and runs ``--calls`` calls from
``--clients`` closed-loop client threads through a DeploymentHandle,
``--repeats`` times; prints one JSON object with the median of the repeats.
Each call carries 1 to 4 rows of the Scorer model (tests/ray_models.py).
"""

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray  # noqa: E402
import torch  # noqa: E402
from ray import serve  # noqa: E402

import aoti_cy.ray  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from ray_models import scorer_call, scorer_package  # noqa: E402


def closed_loop(handle, calls, clients):
    """(seconds, latencies) of ``calls`` calls from ``clients`` threads, each
    sending its next call when the last one is answered."""
    latencies, lock, next_call = [], threading.Lock(), iter(range(len(calls)))

    def client():
        while True:
            with lock:
                i = next(next_call, None)
            if i is None:
                return
            args, kwargs = calls[i]
            start = time.perf_counter()
            handle.remote(*args, **kwargs).result(timeout_s=120)
            with lock:
                latencies.append(time.perf_counter() - start)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def measure(path, runtime, replicas, batching, calls, clients, repeats, warmup):
    served = aoti_cy.ray.deployment(
        path, name="bench", runtime=runtime, num_replicas=replicas,
        max_batch_size=16 if batching else None, batch_wait_timeout_s=0.002,
        max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    handle = serve.run(served.app, name="bench", route_prefix=None)
    try:
        closed_loop(handle, calls[:warmup], clients)
        rounds = []
        for _ in range(repeats):
            seconds, latencies = closed_loop(handle, calls, clients)
            latencies.sort()
            rounds.append({"calls_per_s": len(calls) / seconds,
                           "p50_ms": 1e3 * latencies[len(latencies) // 2],
                           "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)]})
        runs = sum(s["runs"] for s in served.replica_stats().values())
    finally:
        serve.delete("bench")
        served.close()
    result = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result["rounds"] = rounds
    result["model_runs_last_round_approx"] = runs
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--runtimes", default="aoti_cy,torch")
    args = parser.parse_args()
    path = scorer_package(args.width)
    calls = [scorer_call(rows=1 + i % 4, seed=i, width=args.width) for i in range(args.calls)]
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    with socket.socket() as s:   # a free loopback port (the HTTP proxy is unused)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                           "ray": ray.__version__},
               "model": f"Scorer(width={args.width}), 1-4 rows a call",
               "calls": args.calls, "clients": args.clients, "repeats": args.repeats,
               "configs": []}
    try:
        for runtime in args.runtimes.split(","):
            for replicas in (1, 2):
                for batching in (False, True):
                    result = measure(path, runtime, replicas, batching, calls,
                                     args.clients, args.repeats, args.warmup)
                    result.update(runtime=runtime, replicas=replicas, batching=batching)
                    results["configs"].append(result)
                    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}),
                          file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
