"""The class Serve builds in each replica, and the check it makes first.

Ray puts the driver's working directory at the front of every worker's
import path. Started from a folder that holds a folder named ``aoti_cy``
(the parent of a source checkout, say), a replica would import that folder
instead of the installed package and fail somewhere inside Serve with a
message that does not say why. So this module is pickled by value (it
imports only the standard library at the top), its class reaches the
replica even then, checks what ``aoti_cy`` resolves to, and raises an error
that names the folder and the fix. Serve reports a replica's constructor
error to the driver only as "Failed to update the deployments" (the
traceback goes to the controller's log), so ``deployment()`` first runs the
same check in a Ray task of the driver's job, whose workers get the same
import path, and raises it there.
"""

import importlib
import importlib.machinery
import importlib.util
import os

__all__ = ["ReplicaEntry", "ShadowedPackageError", "check_installed_aoti_cy"]


class ShadowedPackageError(ImportError):
    """``aoti_cy`` resolves to a folder that is not the installed package."""


def check_installed_aoti_cy(spec=None):
    """Raise :class:`ShadowedPackageError` when ``spec`` (default: what
    ``import aoti_cy`` finds here) is not a built aoti_cy package: a
    namespace package (a folder without ``__init__.py``), or a package
    without the compiled ``interface`` module."""
    if spec is None:
        spec = importlib.util.find_spec("aoti_cy")
    if spec is None:
        raise ShadowedPackageError("aoti_cy is not installed in this Ray worker's environment; "
                                   "install it where the replicas run")
    folders = list(spec.submodule_search_locations or [])
    if spec.origin in (None, "namespace") or not folders:
        problem = "a folder without __init__.py (an empty namespace package)"
    elif not any(os.path.exists(os.path.join(folder, "interface" + suffix))
                 for folder in folders for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        problem = "a package without the compiled module aoti_cy.interface"
    else:
        return
    where = ", ".join(repr(f) for f in folders) or "(nowhere)"
    raise ShadowedPackageError(
        f"aoti_cy in this Ray worker resolves to {where}: {problem}, not the installed aoti_cy. "
        f"Ray puts the driver's working directory first on each worker's import path, so a "
        f"folder named 'aoti_cy' there shadows the installed package. Start the driver from "
        f"another directory (or rename that folder); if it is a source checkout you mean to "
        f"run, build it in place (python setup.py build_ext --inplace).")


class ReplicaEntry:
    """What Serve instantiates: checks the package, then runs an
    ``aoti_cy.ray._replica.ModelReplica`` and passes every call to it."""

    def __init__(self, *args):
        check_installed_aoti_cy()
        replica_module = importlib.import_module("aoti_cy.ray._replica")
        self._replica = replica_module.ModelReplica(*args)

    async def __call__(self, *args, **kwargs):
        """A handle call (``handle.remote(*args, **kwargs)``), or an HTTP request."""
        return await self._replica(*args, **kwargs)

    async def call(self, *args, **kwargs):
        """The model's outputs for one call (``handle.call.remote(...)``)."""
        return await self._replica.call(*args, **kwargs)

    async def check_health(self):
        """Serve's health check: a run on the example inputs."""
        await self._replica.check_health()

    def stats(self):
        """This replica's counts (see ``ModelReplica.stats``)."""
        return self._replica.stats()
