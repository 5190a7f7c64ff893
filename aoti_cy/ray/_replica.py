"""One Serve replica: loads the package from Ray's object store and runs it.

The package bytes come from the deployment's weight store (see
``_coordinator``), are written to a private temporary file, loaded, and the
file is deleted (the loader keeps its own extracted copy). Calls come in
through a handle (tensors, numpy arrays, any call the exported module
takes) or over HTTP as JSON; with batching on, concurrent calls are merged
along dim 0 (``aoti_cy.serving._batching``). A thread polls the
coordinator: heartbeat, stats, and the two phases of a weight rollout.
Serve builds it through ``_entry.ReplicaEntry``, which first checks that
``aoti_cy`` is the installed package.
"""

import asyncio
import importlib
import logging
import os
import shutil
import tempfile
import threading
import time

import ray
import torch
import torch.utils._pytree as pytree
from ray import serve
from ray.serve import metrics

from aoti_cy.serving import _batching, _json
from aoti_cy.serving._rollout import POLL_S

__all__ = ["ModelReplica"]

logger = logging.getLogger("ray.serve")

LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


class _Outcome:
    """A batched call's result or error (serve.batch sets results, so an
    error travels as a value and is raised by its own caller)."""

    __slots__ = ("value", "error")

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


def _load_package(data, settings):
    """The model from package bytes, through aoti_cy (or torch's loader)."""
    for module in settings["imports"]:   # custom ops, pytree output types
        importlib.import_module(module)
    folder = tempfile.mkdtemp(prefix="aoti_cy-ray-")
    try:
        path = os.path.join(folder, "model.pt2")
        with open(path, "wb") as f:
            f.write(data)
        if settings["runtime"] == "torch":
            return torch._inductor.aoti_load_package(path)
        import aoti_cy
        options = {}
        if settings["cuda_graphs"] is not None:   # only where asked: older aoti_cy lacks it
            options["cuda_graphs"] = settings["cuda_graphs"]
        return aoti_cy.load(path, device=settings["device"], num_models=settings["num_models"],
                            model_name=settings["model_name"],
                            check_inputs=settings["check_inputs"], **options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ModelReplica:
    """The body of the deployment ``aoti_cy.ray.deployment`` builds."""

    def __init__(self, actors, settings):
        store_name, coordinator_name, namespace = actors
        self._settings = settings
        store = ray.get_actor(store_name, namespace=namespace)
        self._coordinator = ray.get_actor(coordinator_name, namespace=namespace)
        self.replica = serve.get_replica_context().replica_tag
        self._device = torch.device(settings["device"] or "cpu")
        started = time.perf_counter()
        (package_ref,) = ray.get(store.package.remote())
        self._model = _load_package(ray.get(package_ref), settings)
        self._aoti = settings["runtime"] != "torch"
        self.version, self._apply_failed = 0, None
        version, refs, strict = ray.get(store.committed.remote())
        if refs:   # a rollout happened before this replica started
            self._apply(version, ray.get(refs[0]), strict)
        self._example = settings["example"]
        if self._example is not None:   # fail here, not at the first call
            self._execute(*self._example)
        self._in_spec = self._json_dtypes = None
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "runs": 0, "errors": 0, "health_checks": 0,
                       "batch_sizes": {}, "pid": os.getpid(), "replica": self.replica,
                       "load_s": time.perf_counter() - started}
        self._metrics = {
            "requests": metrics.Counter("aoti_cy_requests", "Calls answered",
                                        tag_keys=("outcome",)),
            "batch": metrics.Histogram("aoti_cy_batch_size", "Calls served by one model run",
                                       boundaries=BATCH_BOUNDARIES),
            "latency": metrics.Histogram("aoti_cy_latency_ms", "Time to answer a call (ms)",
                                         boundaries=LATENCY_BOUNDARIES_MS),
        }
        self._batched = None
        if settings["max_batch_size"] and settings["max_batch_size"] > 1:
            # Batches do not wait on Serve's semaphore but on ours (_run_batch).
            self._batched = serve.batch(
                max_batch_size=settings["max_batch_size"],
                batch_wait_timeout_s=settings["batch_wait_timeout_s"],
                max_concurrent_batches=64)(self._run_batch)
            self._slots = asyncio.Semaphore(settings["num_models"])
            self._waiting = []
        self._stopped = threading.Event()
        threading.Thread(target=self._poll_loop, name="aoti_cy-poll", daemon=True).start()

    # ---- calls ---------------------------------------------------------------

    async def __call__(self, *args, **kwargs):
        """A handle call (``handle.remote(*args, **kwargs)``), or an HTTP request."""
        if len(args) == 1 and not kwargs and _is_http_request(args[0]):
            return await self._http(args[0])
        return await self.call(*args, **kwargs)

    async def call(self, *args, **kwargs):
        """The model's outputs for one call, as the exported module returns them
        (numpy arrays where the call gave numpy arrays)."""
        started = time.perf_counter()
        request = _batching.Request(args, kwargs)
        try:
            if self._batched is not None and request.key is not None:
                outcome = await self._batched(request)
                if outcome.error is not None:
                    raise outcome.error
                result = outcome.value
            else:
                result = await asyncio.to_thread(self._run, request)
        except Exception:
            self._count(errors=1)
            self._metrics["requests"].inc(tags={"outcome": "error"})
            raise
        self._metrics["requests"].inc(tags={"outcome": "ok"})
        self._metrics["latency"].observe((time.perf_counter() - started) * 1e3)
        if self._example is None:
            self._example = (request.args, request.kwargs)   # for check_health
        return _to_numpy(result) if request.numpy else result

    async def _run_batch(self, requests):
        """serve.batch's handler: one _Outcome per request.

        Serve forms a batch, then waits for a free slot (``num_models``); so
        while the model runs, several small batches pile up. The first of
        them to get a slot runs every request waiting by then, so batches
        grow with the load instead of queueing behind each other."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((requests, future))
        async with self._slots:
            if not future.done():
                taken, self._waiting = self._waiting, []
                merged = [r for batch, _ in taken for r in batch]
                try:
                    outcomes = await asyncio.to_thread(self._run_requests, merged)
                except Exception as e:  # noqa: BLE001 - each caller gets it
                    outcomes = [_Outcome(error=e)] * len(merged)
                start = 0
                for batch, waiter in taken:
                    waiter.set_result(outcomes[start:start + len(batch)])
                    start += len(batch)
        return await future

    def _run_requests(self, requests):
        """Outcomes of ``requests``, grouped into as few runs as fit."""
        outcomes = [None] * len(requests)
        for group in _batching.group_requests(requests, self._settings["max_batch_rows"],
                                              self._settings["max_batch_size"]):
            members = [requests[i] for i in group]
            for i, outcome in zip(group, self._run_group(members)):
                outcomes[i] = outcome
        return outcomes

    def _run_group(self, members):
        """Outcomes of requests that fit one batch: one run, or, where that run
        fails or its outputs have no batch dim, one run each."""
        if len(members) > 1:
            try:
                args, kwargs = _batching.merge(members)
                shares = _batching.split(self._invoke(args, kwargs, len(members)),
                                         [m.rows for m in members])
                if shares is not None:
                    return [_Outcome(share) for share in shares]
            except (TypeError, ValueError, RuntimeError) as e:
                logger.info("aoti_cy: a batch of %d failed (%s); running its calls one by one",
                            len(members), e)
        outcomes = []
        for member in members:
            try:
                outcomes.append(_Outcome(self._run(member)))
            except Exception as e:   # noqa: BLE001 - raised by its own caller
                outcomes.append(_Outcome(error=e))
        return outcomes

    def _run(self, request):
        return self._invoke(request.args, request.kwargs, 1)

    def _invoke(self, args, kwargs, calls):
        """One counted model run on (args, kwargs) holding ``calls`` calls."""
        outputs = self._execute(args, kwargs)
        self._count(runs=1, requests=calls, batch=calls)
        self._metrics["batch"].observe(calls)
        return outputs

    def _execute(self, args, kwargs):
        """The model's outputs for (args, kwargs), moved to and from its device."""
        on_device = self._device.type != "cpu"
        if on_device:
            args, kwargs = pytree.tree_map_only(
                torch.Tensor, lambda t: t.to(self._device), (args, kwargs))
        with torch.no_grad():
            outputs = self._model(*args, **kwargs)
        if on_device:
            outputs = pytree.tree_map_only(torch.Tensor, lambda t: t.cpu(), outputs)
        return outputs

    async def _http(self, request):
        from starlette.responses import JSONResponse
        try:
            body = await request.json()
        except ValueError as e:
            return JSONResponse({"error": f"the body is not JSON: {e}"}, status_code=400)
        try:
            args, kwargs = _json.call_from_json(self._input_spec(), body, self._dtypes())
            return JSONResponse(_json.to_json(await self.call(*args, **kwargs)))
        except (TypeError, ValueError) as e:
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=400)

    def _input_spec(self):
        if self._in_spec is None:
            if not self._aoti:
                raise TypeError("the JSON route needs the aoti_cy runtime")
            self._in_spec = pytree.treespec_loads(self._model.call_spec[0])
        return self._in_spec

    def _dtypes(self):
        if self._json_dtypes is None:
            example = self._settings["example"]
            self._json_dtypes = ({} if example is None
                                 else _json.leaf_dtypes(self._input_spec(), example))
        return self._json_dtypes

    # ---- health, stats -------------------------------------------------------

    async def check_health(self):
        """Serve's health check: a run on the example inputs (those given at
        deployment, else the first call answered), off the event loop.
        Raising makes Serve replace the replica."""
        if self._aoti and self._model.closed:
            raise RuntimeError("the model is closed")
        if self._example is not None:
            await asyncio.to_thread(self._execute, *self._example)
            self._count(health_checks=1)

    def stats(self):
        """This replica's counts: requests, model runs, errors, health checks
        run, batch sizes ({calls per run: runs}), pid, weights version, load
        time."""
        with self._stats_lock:
            stats = dict(self._stats, batch_sizes=dict(self._stats["batch_sizes"]))
        stats["version"] = self.version
        return stats

    def _count(self, runs=0, requests=0, errors=0, batch=None, health_checks=0):
        with self._stats_lock:
            s = self._stats
            s["health_checks"] += health_checks
            s["runs"] += runs
            s["requests"] += requests
            s["errors"] += errors
            if batch is not None:
                s["batch_sizes"][batch] = s["batch_sizes"].get(batch, 0) + 1

    # ---- weights ---------------------------------------------------------------

    def _poll_loop(self):
        failures = 0
        while not self._stopped.wait(POLL_S):
            try:
                action = ray.get(self._coordinator.poll.remote(
                    self.replica, self.version, self.stats()), timeout=30)
                failures = 0
            except Exception as e:  # noqa: BLE001 - the coordinator may be gone
                failures += 1
                if failures == 1:
                    logger.warning("aoti_cy: cannot reach the coordinator: %s", e)
                continue
            if action is not None:
                self._act(*action)

    def _act(self, phase, version, refs, strict):
        if phase == "apply" and version == self._apply_failed:
            return
        try:
            state_dict = ray.get(refs[0])
            if phase == "validate":
                if not self._aoti:
                    raise RuntimeError("this deployment runs torch's loader, which has "
                                       "no safe weight swap")
                self._model.check_weights(state_dict, strict=strict)
                ok, message = True, ""
            else:
                self._apply(version, state_dict, strict)
                ok, message = True, ""
        except Exception as e:  # noqa: BLE001 - reported to the coordinator
            if phase == "apply":
                self._apply_failed = version
            ok, message = False, f"{type(e).__name__}: {e}"
        self._coordinator.report.remote(self.replica, phase, version, ok, message)

    def _apply(self, version, state_dict, strict):
        self._model.load_weights(state_dict, strict=strict)
        self.version = version

    def __del__(self):
        stopped = getattr(self, "_stopped", None)
        if stopped is not None:
            stopped.set()


def _is_http_request(value):
    try:
        from starlette.requests import Request
    except ImportError:   # pragma: no cover - serve installs starlette
        return False
    return isinstance(value, Request)


def _to_numpy(outputs):
    return pytree.tree_map_only(torch.Tensor, lambda t: t.numpy(), outputs)
