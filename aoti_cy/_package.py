"""Reading the artifacts aoti_cy loads: a `.pt2` package, an extracted
package directory, or a bare model `.so`.

:class:`~aoti_cy._package_index.PackageIndex` (re-exported here) is the one
reader of the `.pt2` archive: it checks every member once and answers which
models a package holds, their metadata, device and members. Everything else
in aoti_cy (loading, the torch-compatible loader, the CLI, Ray deployments)
asks it; nothing else opens the zip.

A `.pt2` is a zip. Only the members the runtime needs are extracted, into a
private (0700) temporary directory, after checking every path so that nothing
lands outside it; the directory goes away on close, on a failed load, and at
interpreter exit.

A model library whose ``PT_GNU_STACK`` header asks for an executable stack
(every library torch 2.13 links does: its weights object is assembled
without a ``.note.GNU-stack`` note) is loaded without one: the copy
extracted from a `.pt2` is ours and is fixed in place; any other library
is copied into a private folder first (``private_library_copy``), so the
user's file is never written.

The package hands out what it stores (:meth:`Artifact.weights`); it never
drives a container.
"""

import json
import mmap
import os
import shutil
import tempfile
import weakref

from aoti_cy import _cpp_build, _elf
from aoti_cy._package_index import (DEVICE_KEY, NotAZipError, PackageIndex, parse_metadata,
                                    read_small_file)
from aoti_cy.errors import PackageError

__all__ = ["Artifact", "NotAZipError", "PackageIndex", "PackageWeights", "list_models",
           "open_artifact", "private_library_copy"]

# ---- weights ----------------------------------------------------------------------


class PackageWeights:
    """The weights a package stores outside its model library.

    Attributes
    ----------
    blob_path : str or None
        The raw constants blob (``*.blob``) torch writes beside the library.
    config_path : str or None
        ``weights_config.json``: FQN -> (file, shape, stride, offset) of the
        pickled weights in ``weights_dir``.
    """

    def __init__(self, blob_path=None, config_path=None, weights_dir=None):
        self.blob_path = blob_path
        self.config_path = config_path
        self.weights_dir = weights_dir

    @property
    def blob(self):
        """None, or a context manager giving the blob as a read-only buffer
        (a memory map of the file, closed on exit)."""
        return None if self.blob_path is None else _MappedFile(self.blob_path)

    def state_dict(self):
        """The pickled weights as FQN -> tensor (views of memory-mapped
        files), or None when the package has none.

        Raises
        ------
        PackageError
            The weights index or a weights file cannot be read.
        """
        if self.config_path is None:
            return None
        import torch
        try:
            with open(self.config_path) as f:
                config = json.load(f)
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
            files, weights = {}, {}
            for fqn, (filename, shape, stride, offset) in config.items():
                name = os.path.basename(filename)
                if name not in files:
                    files[name] = torch.load(os.path.join(self.weights_dir, name),
                                             weights_only=True, mmap=True)
                weights[fqn] = files[name].as_strided(shape, stride, offset)
            return weights
        except (OSError, ValueError, TypeError, RuntimeError, AttributeError) as e:
            raise PackageError(
                f"cannot read the package's weights ({self.config_path}): {e}") from None


class _MappedFile:
    """``with _MappedFile(path) as buffer``: the file mapped read-only."""

    def __init__(self, path):
        self.path = path
        self._file = self._map = None

    def __enter__(self):
        self._file = open(self.path, "rb")
        try:
            if os.fstat(self._file.fileno()).st_size == 0:
                return memoryview(b"")   # mmap cannot map an empty file
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            return self._map
        except BaseException:
            self._file.close()
            raise

    def __exit__(self, *exc):
        if self._map is not None:
            self._map.close()
            self._map = None
        self._file.close()
        return False


# ---- artifacts ----------------------------------------------------------------------


class Artifact:
    """A model library ready to load, and the files it needs."""

    def __init__(self, library_path, *, cubin_dir=None, metadata=None,
                 weights_blob=None, weights_config=None, weights_dir=None,
                 tempdir=None, shipped_stack_flags=None, declared_device=None,
                 origin=None, model_name=None):
        self.library_path = library_path
        # PT_GNU_STACK flags of the library as the package shipped it, where
        # our extracted copy was fixed; None otherwise (read the file itself).
        self.shipped_stack_flags = shipped_stack_flags
        self.cubin_dir = cubin_dir
        self.metadata = metadata or {}
        self.declared_device = declared_device   # None: the package names none
        self.weights_blob = weights_blob        # raw constants blob file
        self.weights_config = weights_config    # weights_config.json (pickled weights)
        self.weights_dir = weights_dir          # where that config's files are
        self._origin = origin or library_path
        self._model_name = model_name
        self._tempdir = tempdir
        self._finalizer = (weakref.finalize(self, _remove_private_dir, tempdir, os.getpid())
                           if tempdir is not None else None)

    @property
    def stores_weights_outside_library(self):
        """Whether the package keeps its weights in files beside the `.so`."""
        return self.weights_blob is not None or self.weights_config is not None

    @property
    def device(self):
        """The device the model was compiled for, from its metadata (``"cpu"``
        for a bare `.so` without metadata beside it).

        Raises
        ------
        PackageError
            The package's metadata names no device: pass one explicitly.
        """
        if self.declared_device is None:
            raise PackageError(
                f"model {self._model_name!r} of {self._origin} names no device (its "
                f"metadata has no {DEVICE_KEY}; torch's loader refuses it too): pass the "
                f"device to load it on, e.g. device='cpu'")
        return self.declared_device

    def weights(self):
        """What the package stores outside the `.so`: a :class:`PackageWeights`
        whose ``blob`` and ``state_dict()`` the caller gives its container
        (``update_constants_from_blob`` / ``update_constant_buffer``)."""
        return PackageWeights(self.weights_blob, self.weights_config, self.weights_dir)

    def cleanup(self):
        """Remove the private directory, if any. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()


def _remove_private_dir(tempdir, owner_pid):
    # A forked child inherits the finalizer at exit; the directory is still
    # the parent's, in use by its loaded model.
    if os.getpid() == owner_pid:
        shutil.rmtree(tempdir, ignore_errors=True)


def open_artifact(path, model_name="model", *, allow_executable_stack=False):
    """The Artifact for ``path`` (a `.pt2`, an extracted package directory or
    a model `.so`), choosing ``model_name`` among the package's models.
    Unless ``allow_executable_stack``, a library extracted from a `.pt2` that
    asks for an executable stack has the request cleared (in our copy)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model artifact: {path}")
    if os.path.isfile(path) and path.endswith(".so"):
        metadata = _metadata_beside(path)
        # A bare library without metadata beside it: a CPU model, as documented.
        device = "cpu" if metadata is None else (metadata.get(DEVICE_KEY) or None)
        return Artifact(path, metadata=metadata, declared_device=device, origin=path)
    index = PackageIndex.read(path)
    if index.kind == "directory":
        return _artifact(index, model_name, None, None)
    index.model(model_name)   # a missing model is reported before anything is written
    # mode 0700; resolved so the containment check compares like with like
    tempdir = os.path.realpath(tempfile.mkdtemp(prefix="aoti_cy-"))
    try:
        index.extract(model_name, tempdir)
        artifact = _artifact(index, model_name, tempdir, tempdir)
        if not allow_executable_stack:
            _clear_stack_request_in_place(artifact, tempdir)
        return artifact
    except BaseException:
        shutil.rmtree(tempdir, ignore_errors=True)
        raise


def list_models(path):
    """Names of the models in a `.pt2` or extracted package (() for a `.so`)."""
    if not isinstance(path, (bytes, bytearray, memoryview)):
        path = os.fspath(path)
        if os.path.isfile(path) and path.endswith(".so"):
            return ()
    return PackageIndex.read(path).model_names


def _artifact(index, model_name, extracted_to, tempdir):
    model = index.model(model_name)
    metadata = index.metadata(model_name)
    model_dir = index.model_dir(model_name, extracted_to)
    files = model.top_files
    if _cpp_build.ships_sources_only(files):
        # C++ sources only (aot_inductor.package_cpp_only): built once, cached.
        library_path = _cpp_build.build_library(model_dir, list(files))
    else:
        library_path = os.path.join(model_dir, _wrapper_library(files, model_name, index.origin))
    blobs = [f for f in files if f.endswith(".blob")]
    return Artifact(
        library_path,
        cubin_dir=model_dir,
        metadata=metadata,
        declared_device=index.device(model_name),
        weights_blob=os.path.join(model_dir, blobs[0]) if blobs else None,
        weights_config=(os.path.join(model_dir, "weights_config.json")
                        if "weights_config.json" in files else None),
        weights_dir=index.weights_dir(extracted_to),
        tempdir=tempdir, origin=index.origin, model_name=model_name)


def _metadata_beside(library_path):
    """The metadata torch writes next to a model library
    (``<stem>_metadata.json``), or None when there is none."""
    candidate = library_path[:-len(".so")] + "_metadata.json"
    if not os.path.isfile(candidate):
        return None
    return parse_metadata(read_small_file(candidate), f"model metadata {candidate}")


def _wrapper_library(files, model_name, origin):
    """The model's wrapper `.so` among its files (others are kernel libraries)."""
    libraries = [f for f in files if f.endswith(".so")]
    wrappers = [f for f in libraries if ".wrapper" in f]
    if len(wrappers) > 1:
        raise PackageError(
            f"model {model_name!r} in {origin} has several wrapper libraries: "
            f"{', '.join(wrappers)}")
    if wrappers:
        return wrappers[0]
    if len(libraries) == 1:
        return libraries[0]
    if not libraries:
        raise PackageError(
            f"model {model_name!r} in {origin} has no compiled .so and no C++ "
            f"sources to build one from")
    raise PackageError(
        f"model {model_name!r} in {origin} has several .so files and none "
        f"is a wrapper library: {', '.join(libraries)}")


def _clear_stack_request_in_place(artifact, tempdir):
    """Clear the executable-stack request of a library extracted into
    ``tempdir`` (a library built from C++ sources lives in the shared build
    cache, and is built without one)."""
    library = artifact.library_path
    if not library.startswith(tempdir + os.sep):
        return
    _elf.check_elf(library)   # a damaged library gets the usual message
    flags = _elf.stack_flags(library)
    if _elf.asks_for_executable_stack(flags):
        _elf.clear_executable_stack(library)
        artifact.shipped_stack_flags = flags


def private_library_copy(path):
    """``(copy, folder)``: a copy of the model library at ``path`` whose
    executable-stack request is cleared, in a new private folder. The caller
    removes the folder (``_remove_private_dir``) once the copy is unloaded;
    the file at ``path`` is only read."""
    if _elf.stack_flags(path) is None:
        _elf.clear_executable_stack(path)   # raises: there is no header to clear
    size = os.path.getsize(path)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if size > free:
        raise PackageError(
            f"{path} asks for an executable stack, and loading it without one needs a "
            f"copy of it: {size} bytes in {tempfile.gettempdir()}, where only {free} are "
            f"free (set TMPDIR to a larger folder, or relink the library with "
            f"-Wl,-z,noexecstack)")
    folder = os.path.realpath(tempfile.mkdtemp(prefix="aoti_cy-"))
    copy = os.path.join(folder, os.path.basename(path))
    try:
        shutil.copyfile(path, copy)
        _elf.clear_executable_stack(copy)
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise PackageError(f"cannot copy {path} into {folder} to load it without an "
                           f"executable stack: {e}") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return copy, folder

