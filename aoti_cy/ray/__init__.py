"""Serving aoti_cy models on Ray Serve, from one machine to a cluster.

    import aoti_cy.ray
    from ray import serve

    served = aoti_cy.ray.deployment("model.pt2", num_replicas=2, max_batch_size=16)
    handle = serve.run(served.app, name="model", route_prefix="/model")
    y = handle.remote(x).result()          # tensors or numpy arrays, any call the
                                           # exported module takes
    served.load_weights(module.state_dict())   # checked on every replica, then applied
    served.close()                         # after serve.delete("model")

Needs the ``ray`` extra (``pip install aoti_cy[ray]``); ``import aoti_cy``
never imports Ray. The package travels to the replicas through Ray's object
store (no shared filesystem); weights rolled out travel the same way.
"""

import io
import json
import os
import uuid
import zipfile

try:
    import ray
    from ray import serve
except ImportError as e:   # pragma: no cover - depends on the environment
    raise ImportError(f"aoti_cy.ray needs Ray Serve ({e}): pip install 'aoti_cy[ray]' "
                      f"(with torch pinned in the same command)") from e

from aoti_cy.ray._batching import Request
from aoti_cy.ray._coordinator import Coordinator
from aoti_cy.ray._replica import ModelReplica

__all__ = ["RolloutError", "ServedModel", "deployment"]

NAMESPACE = "aoti_cy"


class RolloutError(ValueError):
    """A weight rollout that did not complete; ``report`` says, per replica,
    what happened. Refused in the ``validate`` phase: no replica changed."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


class ServedModel:
    """A deployment built by :func:`deployment`: ``app`` to ``serve.run``,
    and the calls that reach every replica (weights, stats)."""

    def __init__(self, app, deployment, coordinator, coordinator_name):
        self.app = app
        self.deployment = deployment
        self._coordinator = coordinator
        self.coordinator_name = coordinator_name

    def load_weights(self, state_dict, *, strict=True, timeout_s=120.0):
        """Roll ``state_dict`` out to every replica: each live replica first
        checks it (as ``ModelContainer.load_weights`` would: names, dtypes,
        shapes, missing and unknown keys); only when all accept is it applied,
        on each with ``load_weights`` (the safe swap: calls in flight finish on
        the old weights). Replicas started later load it before serving.

        Returns the report ``{"ok", "version", "phase", "replicas": {replica:
        "ok" | reason}}``; raises :class:`RolloutError` (carrying it) when a
        replica refused (nothing changed anywhere) or the rollout timed out."""
        report = ray.get(self._coordinator.rollout.remote(state_dict, strict, timeout_s))
        if not report["ok"]:
            reasons = "; ".join(f"{r}: {why}" for r, why in report["replicas"].items()
                                if why != "ok")
            unchanged = " (no replica changed)" if report["phase"] == "validate" else ""
            raise RolloutError(f"weight rollout failed in its {report['phase']} phase"
                               f"{unchanged}: {report.get('error')}; {reasons}", report)
        return report

    def replica_stats(self):
        """{replica: stats} of the live replicas, as each last reported them
        (at most a fraction of a second old): requests, model runs, errors,
        batch sizes ({calls per run: runs}), pid, weights version."""
        return {r: dict(info["stats"], version=info["version"])
                for r, info in ray.get(self._coordinator.replicas.remote()).items()}

    def close(self):
        """Free the coordinator (the package and weights it keeps); call it
        once the application is deleted."""
        ray.kill(self._coordinator)


def _package_device(package, model_name):
    """The device ``model_name`` of a .pt2 (its bytes) was compiled for,
    from its metadata, without extracting anything else."""
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        for member in archive.namelist():
            parts = member.split("/")
            if (parts[-3:-1] == ["aotinductor", model_name]
                    and parts[-1].endswith(".wrapper_metadata.json")):
                return json.loads(archive.read(member)).get("AOTI_DEVICE_KEY") or "cpu"
    return "cpu"


def deployment(package, *, name="aoti_cy", num_replicas=1, num_models=1, device=None,
               check_inputs=True, cuda_graphs=None, model_name="model",
               max_batch_size=None, max_batch_rows=None, batch_wait_timeout_s=0.01,
               example_inputs=None, imports=(), runtime="aoti_cy", ray_actor_options=None,
               **deployment_options):
    """A Ray Serve deployment of an AOTInductor package.

    - ``package``: a ``.pt2`` path, or its bytes. It is put in Ray's object
      store once, owned by the deployment's coordinator actor, and every
      replica (on any host) fetches it from there.
    - ``num_replicas``, ``name``, ``ray_actor_options`` and other
      ``serve.deployment`` options (``deployment_options``) go to Serve.
    - ``num_models``, ``check_inputs``, ``model_name``, ``cuda_graphs`` go to
      ``aoti_cy.load`` in each replica (``cuda_graphs`` only when given).
    - ``device``: ``"cpu"`` or ``"cuda"`` (None: the one in the package's
      metadata); on CUDA
      each replica asks Ray for one GPU and sees it as ``cuda:0``. Calls
      give CPU tensors and get CPU tensors back.
    - ``max_batch_size`` (> 1 turns batching on, for models exported with a
      dynamic batch dim 0 on every input and output): concurrent calls, up
      to that many, waiting at most ``batch_wait_timeout_s``, are concatenated
      along dim 0 (at most ``max_batch_rows`` rows), run once and split back;
      calls that do not fit together run separately, each meeting the
      model's input checks on its own.
    - ``example_inputs``: ``(args, kwargs)`` (or a list of tensors) the model
      takes: Serve's health check runs it, and the JSON route reads the input
      dtypes from it. Default: ``<package>.inputs.pt`` beside a path, if there.
    - ``imports``: modules each replica imports before loading: those that
      register the model's custom ops, or its output types with pytree
      (``"transformers.modeling_outputs"`` for its ``ModelOutput``s).
    - ``runtime="torch"`` runs the package with ``torch._inductor.aoti_load_package``
      instead (for comparisons; no weight rollout, no JSON route).

    Returns a :class:`ServedModel`; ``serve.run(served.app, ...)`` starts it.
    """
    if isinstance(package, (str, os.PathLike)):
        if example_inputs is None and os.path.exists(f"{package}.inputs.pt"):
            import torch
            example_inputs = torch.load(f"{package}.inputs.pt")
        with open(package, "rb") as f:
            package = f.read()
    if not isinstance(package, (bytes, bytearray, memoryview)):
        raise TypeError(f"package must be a .pt2 path or its bytes, got "
                        f"{type(package).__name__}")
    if runtime not in ("aoti_cy", "torch"):
        raise ValueError(f"runtime must be 'aoti_cy' or 'torch', got {runtime!r}")
    if example_inputs is not None:
        if isinstance(example_inputs, (list, tuple)) and not (
                len(example_inputs) == 2 and isinstance(example_inputs[1], dict)):
            example_inputs = (tuple(example_inputs), {})
        request = Request(tuple(example_inputs[0]), dict(example_inputs[1]))
        example_inputs = (request.args, request.kwargs)
    options = dict(ray_actor_options or {})
    if device is None:
        device = _package_device(package, model_name)
    if str(device).startswith("cuda"):
        options.setdefault("num_gpus", 1)
        device = "cuda"    # the one GPU Ray gives the replica
    settings = {"device": device, "num_models": num_models, "check_inputs": check_inputs,
                "cuda_graphs": cuda_graphs, "model_name": model_name,
                "max_batch_size": max_batch_size, "max_batch_rows": max_batch_rows,
                "batch_wait_timeout_s": batch_wait_timeout_s, "example": example_inputs,
                "runtime": runtime, "imports": tuple(imports)}
    coordinator_name = f"{name}-{uuid.uuid4().hex[:12]}"
    # Detached: replicas outlive the driver, and so must the package they load.
    coordinator = ray.remote(Coordinator).options(
        name=coordinator_name, namespace=NAMESPACE, lifetime="detached", num_cpus=0,
        max_concurrency=64).remote(ray.put(bytes(package)))
    if max_batch_size and max_batch_size > 1:
        # Enough calls in a replica at once to fill its batches.
        deployment_options.setdefault("max_ongoing_requests",
                                      max(5, 2 * max_batch_size * num_models))
    built = serve.deployment(ModelReplica, name=name, num_replicas=num_replicas,
                             ray_actor_options=options, **deployment_options)
    app = built.bind((coordinator_name, NAMESPACE), settings)
    return ServedModel(app, built, coordinator, coordinator_name)
