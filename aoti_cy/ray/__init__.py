"""Serving aoti_cy models on Ray Serve, from one machine to a cluster::

    import aoti_cy.ray
    from ray import serve

    served = aoti_cy.ray.deployment("model.pt2", num_replicas=2, max_batch_size=16)
    handle = serve.run(served.app, name="model", route_prefix="/model")
    client = served.client(handle)         # deadlines, retries on replica death
    y = client.call(x)                     # tensors or numpy arrays, any call the
                                           # exported module takes
    served.load_weights(module.state_dict())   # checked on every replica, then applied
    served.close()                         # after serve.delete("model")

Needs the ``ray`` extra (``pip install aoti_cy[ray]``); ``import aoti_cy``
never imports Ray. The package travels to the replicas through Ray's object
store (no shared filesystem); weights rolled out travel the same way. The
parts that do not need Ray (batching, JSON decoding, the rollout protocol,
deadlines) live in ``aoti_cy.serving``.

Each deployment has two detached actors in the Ray namespace ``"aoti_cy"``
(:data:`NAMESPACE`): ``<name>-<12 hex digits>`` (``ServedModel.coordinator_name``),
which runs rollouts and collects the replicas' stats and is restarted by
Ray when it dies, and ``<same>-store`` (``ServedModel.store_name``), which
owns the package and the committed weights.
"""

import os
import time
import uuid

try:
    import ray
    from ray import serve
except ImportError as e:   # pragma: no cover - depends on the environment
    raise ImportError(f"aoti_cy.ray needs Ray Serve ({e}): pip install 'aoti_cy[ray]' "
                      f"(with torch pinned in the same command)") from e

from aoti_cy._package import PackageIndex
from aoti_cy.errors import PackageError
from aoti_cy.ray import _entry
from aoti_cy.ray._client import REPLICA_GONE, ModelClient, ModelResponse
from aoti_cy.ray._coordinator import Coordinator, WeightStore
from aoti_cy.ray._entry import ReplicaEntry, ShadowedPackageError
from aoti_cy.serving import _batching, _json  # noqa: F401 - also importable from here
from aoti_cy.serving._batching import Request
from aoti_cy.serving._deadline import (DEFAULT_CALL_TIMEOUT_S, DEFAULT_CONTROL_TIMEOUT_S,
                                       CallTimeoutError, CoordinatorTimeoutError)

__all__ = ["CallTimeoutError", "CoordinatorTimeoutError", "DEFAULT_CALL_TIMEOUT_S",
           "DEFAULT_CONTROL_TIMEOUT_S", "ModelClient", "ModelResponse", "NAMESPACE",
           "REPLICA_GONE", "RolloutError", "ServedModel", "ShadowedPackageError", "deployment"]

NAMESPACE = "aoti_cy"

# The replica's entry class must reach a replica whose ``aoti_cy`` is broken,
# to say so: by value, not as a reference to a module it cannot import.
ray.cloudpickle.register_pickle_by_value(_entry)


class RolloutError(ValueError):
    """A weight rollout that did not complete. Refused in the ``validate``
    phase: no replica changed.

    Parameters
    ----------
    message : str
        What happened, per replica that did not accept.
    report : dict
        The rollout's report (see :meth:`ServedModel.load_weights`).

    Attributes
    ----------
    report : dict
        ``{"ok", "version", "phase", "error", "replicas": {replica: {"state",
        "reason"}}}``, the state one of ``"ok"``, ``"refused"``, ``"not
        asked"``, ``"unreachable"``; after a coordinator death also
        ``"committed"``, whether the new weights were committed.
    """

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report

    def __reduce__(self):
        return type(self), (str(self), self.report)


def _control_call(send, timeout_s, what, retry=True):
    """``ray.get(send())`` within ``timeout_s``, or :class:`CoordinatorTimeoutError`.
    With ``retry`` (reads, which are idempotent), a call that finds the actor
    restarting is sent again until the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        ref = send()
        try:
            return ray.get(ref, timeout=max(deadline - time.monotonic(), 0.0))
        except ray.exceptions.GetTimeoutError:
            _cancel(ref)
        except ray.exceptions.ActorUnavailableError:
            if not retry:
                raise
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
            if time.monotonic() < deadline:
                continue
        raise CoordinatorTimeoutError(
            f"{what} was not answered within {timeout_s:g} s: the deployment's actor is busy, "
            f"hung or restarting")


def _cancel(ref):
    """Cancel the call behind ``ref`` if Ray still can (best effort: the
    coordinator itself refuses work past its deadline)."""
    try:
        ray.cancel(ref)
    except Exception:  # noqa: BLE001 - nothing more to do
        pass


class ServedModel:
    """A deployment built by :func:`deployment`: ``app`` to ``serve.run``,
    clients with deadlines, and the calls that reach every replica (weights,
    stats). Every call here has a deadline (``timeout_s``) and raises a
    ``TimeoutError`` subclass when it passes.

    Attributes
    ----------
    app : ray.serve.Application
        What to pass to ``serve.run``.
    deployment : ray.serve.Deployment
        The Serve deployment behind ``app``.
    coordinator_name, store_name : str
        The names of the deployment's two detached actors.
    namespace : str
        Their Ray namespace, :data:`NAMESPACE`.
    call_timeout_s : float
        The default deadline of a call through :meth:`client`.
    """

    def __init__(self, app, deployment, store, coordinator, names, call_timeout_s):
        self.app = app
        self.deployment = deployment
        self._store = store
        self._coordinator = coordinator
        self.store_name, self.coordinator_name = names
        self.namespace = NAMESPACE
        self.call_timeout_s = call_timeout_s

    def client(self, handle, *, timeout_s=None):
        """A client calling through ``handle``, with deadlines and retries.

        A call whose replica died is sent again to a live one until it is
        answered or its deadline passes.

        Parameters
        ----------
        handle : ray.serve.handle.DeploymentHandle
            What ``serve.run(served.app)`` returned.
        timeout_s : float or None
            Each call's deadline in seconds, retries included (None: the
            deployment's ``call_timeout_s``).

        Returns
        -------
        ModelClient
            Its calls raise :class:`CallTimeoutError` when their deadline
            passes.

        Raises
        ------
        ValueError
            ``timeout_s`` is not above 0.
        """
        return ModelClient(handle, self.call_timeout_s if timeout_s is None else timeout_s)

    def load_weights(self, state_dict, *, strict=True, timeout_s=120.0):
        """Roll ``state_dict`` out to every replica: each live replica first
        checks it (as ``ModelContainer.load_weights`` would: names, dtypes,
        shapes, missing and unknown keys); only when all accept is it
        committed, then applied on each with ``load_weights`` (the safe swap:
        calls in flight finish on the old weights). Replicas started later
        load it before serving.

        Parameters
        ----------
        state_dict : dict of str to torch.Tensor
            The new weights, by FQN.
        strict : bool
            Demand every weight and no unknown key, as
            ``ModelContainer.load_weights`` does.
        timeout_s : float
            Bounds the whole call (after a coordinator death, up to 1 s more
            to read the committed version); nothing is committed in its last
            tenth (at most its last second), so a timeout never races a
            commit.

        Returns
        -------
        dict
            The report ``{"ok", "version", "phase", "error", "replicas":
            {replica: {"state", "reason"}}}``, every state ``"ok"``.

        Raises
        ------
        RolloutError
            A replica refused (nothing changed anywhere), the deadline passed
            inside the coordinator, or the coordinator died mid-rollout
            (``report["committed"]`` then says whether the replicas converge
            on the new weights or stay on the old ones). Carries the report.
        CoordinatorTimeoutError
            No answer came in time.
        """
        deadline = time.monotonic() + timeout_s
        version, refs = _control_call(lambda: self._store.stage.remote(state_dict), timeout_s,
                                      "storing the weights for the rollout", retry=False)
        del state_dict
        remaining = deadline - time.monotonic()
        margin = min(1.0, 0.1 * timeout_s)
        try:
            report = _control_call(
                lambda: self._coordinator.rollout.remote(version, refs, strict,
                                                         time.time() + remaining - margin),
                remaining, f"the rollout of version {version}", retry=False)
        except ray.exceptions.RayActorError as e:
            committed = self.committed_version(timeout_s=max(1.0, deadline - time.monotonic()))
            report = {"ok": False, "phase": "unknown", "version": version, "replicas": {},
                      "committed": committed == version,
                      "error": f"the coordinator died mid-rollout ({type(e).__name__})"}
            outcome = ("it had committed them: every replica applies them once the restarted "
                       "coordinator reaches it" if report["committed"] else
                       "it had not committed them: no replica changed")
            raise RolloutError(f"weight rollout of version {version}: the coordinator died; "
                               f"{outcome}", report) from None
        if not report["ok"]:
            reasons = "; ".join(f"{r}: {s['state']}" + (f" ({s['reason']})" if s["reason"] else "")
                                for r, s in report["replicas"].items() if s["state"] != "ok")
            unchanged = " (no replica changed)" if report["phase"] == "validate" else ""
            raise RolloutError(f"weight rollout failed in its {report['phase']} phase"
                               f"{unchanged}: {report.get('error')}; {reasons}", report)
        return report

    def committed_version(self, *, timeout_s=DEFAULT_CONTROL_TIMEOUT_S):
        """The weights version every replica runs or is about to.

        Parameters
        ----------
        timeout_s : float
            Deadline in seconds.

        Returns
        -------
        int
            The committed version (0: the package's own weights).

        Raises
        ------
        CoordinatorTimeoutError
            No answer came in time.
        """
        version, _, _ = _control_call(self._store.committed.remote, timeout_s,
                                      "the committed weights version")
        return version

    def replica_stats(self, *, timeout_s=DEFAULT_CONTROL_TIMEOUT_S):
        """The stats of the live replicas, as each last reported them.

        Parameters
        ----------
        timeout_s : float
            Deadline in seconds.

        Returns
        -------
        dict
            ``{replica: stats}``: requests, model runs, errors, health
            checks, batch sizes (``{calls per run: runs}``), pid, weights
            ``version``, and ``age_s``, the seconds since that report
            (replicas report every 0.1 s, so the counts may miss the calls
            of that last fraction of a second).

        Raises
        ------
        CoordinatorTimeoutError
            No answer came in time.
        """
        replicas = _control_call(self._coordinator.replicas.remote, timeout_s,
                                 "the replica stats")
        return {r: dict(info["stats"], version=info["version"], age_s=info["age_s"])
                for r, info in replicas.items()}

    def coordinator_pid(self, *, timeout_s=DEFAULT_CONTROL_TIMEOUT_S):
        """The process id of the coordinator actor (to watch or debug it).

        Parameters
        ----------
        timeout_s : float
            Deadline in seconds.

        Returns
        -------
        int
            The coordinator's pid.

        Raises
        ------
        CoordinatorTimeoutError
            No answer came in time.
        """
        return _control_call(self._coordinator.pid.remote, timeout_s,
                             "the coordinator's pid")

    def close(self):
        """Free the coordinator and the store (the package and weights they
        keep); call it once the application is deleted. It asks Ray to kill
        both and returns without waiting.

        Returns
        -------
        None
        """
        ray.kill(self._coordinator, no_restart=True)
        ray.kill(self._store, no_restart=True)


def _check_workers_import_aoti_cy(runtime_env, timeout_s=DEFAULT_CONTROL_TIMEOUT_S):
    """Raise :class:`ShadowedPackageError` here, in the driver, when a Ray
    worker of this job (as a replica will be) would import something other
    than the installed aoti_cy (see ``_entry``)."""
    task = ray.remote(_entry.check_installed_aoti_cy).options(
        num_cpus=0, max_retries=0, **({"runtime_env": runtime_env} if runtime_env else {}))
    ref = task.remote()
    try:
        ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        _cancel(ref)   # no worker in time: the replicas make the same check
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, ShadowedPackageError):
            raise ShadowedPackageError(str(e.cause)) from None
        raise


def _package_device(package, model_name):
    """The device ``model_name`` of a .pt2 (its bytes) was compiled for, as
    its metadata names it; a PackageError when it names none."""
    device = PackageIndex.read(package).device(model_name)
    if device is None:
        raise PackageError(
            f"model {model_name!r} of the package names no device (its metadata has no "
            f"AOTI_DEVICE_KEY): pass device='cpu' or device='cuda' to deployment()")
    return device


def deployment(package, *, name="aoti_cy", num_replicas=1, num_models=1, device=None,
               check_inputs=True, cuda_graphs=None, model_name="model",
               max_batch_size=None, max_batch_rows=None, batch_wait_timeout_s=0.01,
               example_inputs=None, imports=(), runtime="aoti_cy", ray_actor_options=None,
               call_timeout_s=DEFAULT_CALL_TIMEOUT_S, **deployment_options):
    """A Ray Serve deployment of an AOTInductor package.

    Parameters
    ----------
    package : str, os.PathLike or bytes
        A ``.pt2`` path, or its bytes. It is put in Ray's object store once,
        owned by the deployment's store actor, and every replica (on any
        host) fetches it from there.
    name : str
        The Serve deployment's name, also the stem of its actors' names.
    num_replicas : int
        How many replicas Serve starts.
    num_models, check_inputs, model_name
        Passed to ``aoti_cy.load`` in each replica.
    cuda_graphs : bool or None
        Passed to ``aoti_cy.load`` in each replica, only when given.
    device : str or None
        ``"cpu"`` or ``"cuda"`` (None: the one in the package's metadata). On
        CUDA each replica asks Ray for one GPU and sees it as ``cuda:0``;
        calls give CPU tensors and get CPU tensors back.
    max_batch_size : int or None
        Above 1, turns batching on, for models exported with a dynamic batch
        dim 0 on every input and output: concurrent calls, up to that many,
        are concatenated along dim 0, run once and split back; calls that do
        not fit together run separately, each meeting the model's input
        checks on its own.
    max_batch_rows : int or None
        The most rows of one batched run.
    batch_wait_timeout_s : float
        How long a batch waits for more calls.
    example_inputs : tuple or list or None
        ``(args, kwargs)`` (or a list of tensors) the model takes: Serve's
        health check runs it, and the JSON route reads the input dtypes from
        it. Default: ``<package>.inputs.pt`` beside a path, if there.
    imports : sequence of str
        Modules each replica imports before loading: those that register
        the model's custom ops, or its output types with pytree
        (``"transformers.modeling_outputs"`` for the model output classes of
        ``transformers``).
    runtime : str
        ``"aoti_cy"``, or ``"torch"`` to run the package with
        ``torch._inductor.aoti_load_package`` instead (for comparisons; no
        weight rollout, no JSON route).
    ray_actor_options : dict or None
        Passed to Serve (``num_gpus`` defaults to 1 on CUDA).
    call_timeout_s : float
        The deadline of a call through ``served.client(...)`` (retries
        included) unless the client or call sets another.
    **deployment_options
        Other ``serve.deployment`` options (``autoscaling_config``,
        ``max_ongoing_requests``, ...).

    Returns
    -------
    ServedModel
        ``serve.run(served.app, ...)`` starts it.

    Raises
    ------
    TypeError
        ``package`` is neither a path nor bytes.
    ValueError
        ``runtime`` is not one of the two, or ``call_timeout_s`` is not
        above 0.
    aoti_cy.errors.PackageError
        ``package`` is not a readable `.pt2`, holds no ``model_name``, or
        (with ``device=None``) its metadata names no device.
    ShadowedPackageError
        A Ray worker of this job would import another ``aoti_cy`` than the
        installed one (a folder of that name in the driver's working
        directory).
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
    if not call_timeout_s > 0:
        raise ValueError(f"call_timeout_s must be > 0, got {call_timeout_s!r}")
    _check_workers_import_aoti_cy(options.get("runtime_env"))
    coordinator_name = f"{name}-{uuid.uuid4().hex[:12]}"
    store_name = f"{coordinator_name}-store"
    # Detached: replicas outlive the driver, and so must the package they load.
    store = ray.remote(WeightStore).options(
        name=store_name, namespace=NAMESPACE, lifetime="detached", num_cpus=0,
        max_concurrency=16).remote(ray.put(bytes(package)))
    coordinator = ray.remote(Coordinator).options(
        name=coordinator_name, namespace=NAMESPACE, lifetime="detached", num_cpus=0,
        max_concurrency=64, max_restarts=-1).remote(store)
    if max_batch_size and max_batch_size > 1:
        # Enough calls in a replica at once to fill its batches.
        deployment_options.setdefault("max_ongoing_requests",
                                      max(5, 2 * max_batch_size * num_models))
    built = serve.deployment(ReplicaEntry, name=name, num_replicas=num_replicas,
                             ray_actor_options=options, **deployment_options)
    app = built.bind((store_name, coordinator_name, NAMESPACE), settings)
    return ServedModel(app, built, store, coordinator, (store_name, coordinator_name),
                       float(call_timeout_s))
