"""Requests/s and p50/p99 latency of a Ray Serve deployment of one package:
1 vs 2 replicas, with and without dynamic batching, replicas running it
through aoti_cy or through torch's ``aoti_load_package`` (the same
``aoti_cy.ray`` deployment with ``runtime="torch"``: same routing, batching
and transport, only the loader differs).

Starts a local Ray cluster, then for each configuration deploys both
runtimes side by side, warms up, and runs ``--calls`` calls from
``--clients`` closed-loop client threads through a DeploymentHandle,
``--repeats`` times, alternating the runtimes round by round; prints one
JSON object with the median of the rounds. ``--through client`` sends the
calls through ``ServedModel.client`` (deadline and retries on replica
death) instead of Serve's raw handle, to see what that costs. Each call
carries 1 to 4 rows of
the Scorer model (tests/ray_models.py); ``--width 4096`` makes the model's
run, not Ray's per-call cost, the larger part.
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


def closed_loop(call, calls, clients):
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
            call(*args, **kwargs)
            with lock:
                latencies.append(time.perf_counter() - start)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def deploy(path, runtime, replicas, batching):
    served = aoti_cy.ray.deployment(
        path, name=f"bench-{runtime}", runtime=runtime, num_replicas=replicas,
        max_batch_size=16 if batching else None, batch_wait_timeout_s=0.002,
        max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    return served, serve.run(served.app, name=f"bench-{runtime}", route_prefix=None)


def caller(served, handle, through):
    """One blocking model call, through Serve's handle or an aoti_cy client."""
    if through == "client":
        return served.client(handle, timeout_s=120).call
    return lambda *args, **kwargs: handle.remote(*args, **kwargs).result(timeout_s=120)


def measure(path, runtimes, replicas, batching, calls, clients, repeats, warmup,
            through="handle"):
    """{runtime: medians} for one configuration. The runtimes are deployed side
    by side and their rounds alternate, so a change in the machine's load
    (it is shared) hits them alike."""
    deployed = {runtime: deploy(path, runtime, replicas, batching) for runtime in runtimes}
    rounds = {runtime: [] for runtime in runtimes}
    try:
        callers = {runtime: caller(served, handle, through)
                   for runtime, (served, handle) in deployed.items()}
        for call in callers.values():
            closed_loop(call, calls[:warmup], clients)
        for _ in range(repeats):
            for runtime, call in callers.items():
                seconds, latencies = closed_loop(call, calls, clients)
                latencies.sort()
                rounds[runtime].append({
                    "calls_per_s": len(calls) / seconds,
                    "p50_ms": 1e3 * latencies[len(latencies) // 2],
                    "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)]})
        stats = {runtime: served.replica_stats() for runtime, (served, _) in deployed.items()}
    finally:
        for runtime, (served, _) in deployed.items():
            serve.delete(f"bench-{runtime}")
            served.close()
    results = {}
    for runtime, measured in rounds.items():
        result = {key: statistics.median(r[key] for r in measured) for key in measured[0]}
        calls_served = sum(s["requests"] for s in stats[runtime].values())
        runs = sum(s["runs"] for s in stats[runtime].values())
        result.update(rounds=measured, calls_per_model_run=calls_served / runs)
        results[runtime] = result
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--cpus", type=int, default=4,
                        help="CPUs Ray may hand out (one per replica; both runtimes' "
                             "replicas are deployed at once, idle in turn)")
    parser.add_argument("--runtimes", default="aoti_cy,torch")
    parser.add_argument("--through", choices=("handle", "client"), default="handle",
                        help="Serve's raw handle, or ServedModel.client (deadline, retries)")
    parser.add_argument("--out", help="write the JSON here too (Ray may print to stdout "
                                      "while it shuts down)")
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
               "through": args.through,
               "configs": []}
    try:
        for replicas in (1, 2):
            for batching in (False, True):
                measured = measure(path, args.runtimes.split(","), replicas, batching, calls,
                                   args.clients, args.repeats, args.warmup, args.through)
                for runtime, result in measured.items():
                    result.update(runtime=runtime, replicas=replicas, batching=batching)
                    results["configs"].append(result)
                    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}),
                          file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
