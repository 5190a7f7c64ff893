"""Finding the model library of an artifact: a `.pt2` package, an extracted
package directory, or a bare model `.so`.

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
"""

import json
import mmap
import os
import shutil
import stat
import tempfile
import weakref
import zipfile

from aoti_cy import _cpp_build, _elf
from aoti_cy.errors import PackageError, model_not_found

__all__ = ["Artifact", "list_models", "open_artifact", "private_library_copy"]

MODELS_DIR = ("data", "aotinductor")
_COPY_CHUNK = 1 << 20


class Artifact:
    """A model library ready to load, and the files it needs."""

    def __init__(self, library_path, *, cubin_dir=None, metadata=None,
                 weights_blob=None, weights_config=None, weights_dir=None,
                 tempdir=None, shipped_stack_flags=None):
        self.library_path = library_path
        # PT_GNU_STACK flags of the library as the package shipped it, where
        # our extracted copy was fixed; None otherwise (read the file itself).
        self.shipped_stack_flags = shipped_stack_flags
        self.cubin_dir = cubin_dir
        self.metadata = metadata or {}
        self.weights_blob = weights_blob        # raw constants blob file
        self.weights_config = weights_config    # weights_config.json (pickled weights)
        self.weights_dir = weights_dir          # where that config's files are
        self._tempdir = tempdir
        self._finalizer = (weakref.finalize(self, _remove_private_dir, tempdir, os.getpid())
                           if tempdir is not None else None)

    @property
    def stores_weights_outside_library(self):
        """Whether the package keeps its weights in files beside the `.so`."""
        return self.weights_blob is not None or self.weights_config is not None

    @property
    def device(self):
        """The device the model was compiled for ("cpu" when unknown)."""
        return self.metadata.get("AOTI_DEVICE_KEY") or "cpu"

    def load_weights_into(self, container):
        """Copy weights the package stores outside the `.so` into a fresh
        container (which then owns the only copy)."""
        if self.weights_blob is not None:
            with open(self.weights_blob, "rb") as f:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
                    container.update_constants_from_blob(blob)
        if self.weights_config is not None:
            container.update_constant_buffer(self._pickled_weights(),
                                             validate_full_update=True)

    def _pickled_weights(self):
        import torch
        try:
            with open(self.weights_config) as f:
                config = json.load(f)
            weights = {}
            for fqn, (filename, shape, stride, offset) in config.items():
                path = os.path.join(self.weights_dir, os.path.basename(filename))
                stored = torch.load(path, weights_only=True, mmap=True)
                weights[fqn] = stored.as_strided(shape, stride, offset)
            return weights
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise PackageError(
                f"cannot read the package's weights ({self.weights_config}): {e}") from None

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
    if os.path.isdir(path):
        return _open_directory(path, model_name, tempdir=None)
    if path.endswith(".so"):
        return Artifact(path, metadata=_read_metadata_beside(path))
    return _open_zip(path, model_name, allow_executable_stack)


def list_models(path):
    """Names of the models in a `.pt2` or extracted package (() for a `.so`)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        models_dir = os.path.join(_package_root(path), *MODELS_DIR)
        return tuple(sorted(n for n in os.listdir(models_dir)
                            if os.path.isdir(os.path.join(models_dir, n))))
    if path.endswith(".so"):
        return ()
    try:
        with zipfile.ZipFile(path) as archive:
            return tuple(sorted({
                parts[3] for parts in map(_member_parts, archive.infolist())
                if len(parts) >= 5 and tuple(parts[1:3]) == MODELS_DIR}))
    except zipfile.BadZipFile as e:
        raise PackageError(f"{path} is not a .pt2 package (not a zip file: {e})") from None


def _read_metadata_beside(library_path):
    """The JSON metadata torch writes next to a model library
    (``<stem>_metadata.json``), or {} when there is none."""
    candidate = library_path[:-len(".so")] + "_metadata.json"
    if not os.path.isfile(candidate):
        return {}
    try:
        with open(candidate) as f:
            metadata = json.load(f)
    except (OSError, ValueError) as e:
        raise PackageError(f"model metadata {candidate} is not valid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise PackageError(f"model metadata {candidate} is not a JSON object")
    return metadata


def _package_root(directory):
    """The folder of an extracted package that holds data/aotinductor."""
    if os.path.isdir(os.path.join(directory, *MODELS_DIR)):
        return directory
    for entry in sorted(os.listdir(directory)):
        candidate = os.path.join(directory, entry)
        if os.path.isdir(os.path.join(candidate, *MODELS_DIR)):
            return candidate
    raise PackageError(f"{directory} holds no AOTInductor package (no data/aotinductor)")


def _open_directory(directory, model_name, tempdir):
    root = _package_root(directory)
    models_dir = os.path.join(root, *MODELS_DIR)
    names = sorted(n for n in os.listdir(models_dir)
                   if os.path.isdir(os.path.join(models_dir, n)))
    if model_name not in names:
        raise model_not_found(model_name, directory, names)
    model_dir = os.path.join(models_dir, model_name)
    files = sorted(os.listdir(model_dir))
    if _cpp_build.ships_sources_only(files):
        # C++ sources only (aot_inductor.package_cpp_only): built once, cached.
        library_path = _cpp_build.build_library(model_dir, files)
    else:
        library_path = os.path.join(model_dir, _wrapper_library(files, model_name, directory))
    blobs = [f for f in files if f.endswith(".blob")]
    config = os.path.join(model_dir, "weights_config.json")
    return Artifact(
        library_path,
        cubin_dir=model_dir,
        metadata=_read_metadata_beside(library_path),
        weights_blob=os.path.join(model_dir, blobs[0]) if blobs else None,
        weights_config=config if os.path.isfile(config) else None,
        weights_dir=os.path.join(root, "data", "weights"),
        tempdir=tempdir)


def _wrapper_library(files, model_name, directory):
    """The model's wrapper `.so` among its files (others are kernel libraries)."""
    libraries = [f for f in files if f.endswith(".so")]
    wrappers = [f for f in libraries if ".wrapper" in f]
    if len(wrappers) > 1:
        raise PackageError(
            f"model {model_name!r} in {directory} has several wrapper libraries: "
            f"{', '.join(wrappers)}")
    if wrappers:
        return wrappers[0]
    if len(libraries) == 1:
        return libraries[0]
    if not libraries:
        raise PackageError(
            f"model {model_name!r} in {directory} has no compiled .so and no C++ "
            f"sources to build one from")
    raise PackageError(
        f"model {model_name!r} in {directory} has several .so files and none "
        f"is a wrapper library: {', '.join(libraries)}")


def _member_parts(info):
    """The checked path components of a zip member, or a PackageError."""
    name = info.filename
    if "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"package member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PackageError(f"package member {name!r} points outside the package")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise PackageError(f"package member {name!r} is a symbolic link")
    return parts


def _open_zip(path, model_name, allow_executable_stack):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise PackageError(f"{path} is not a .pt2 package (not a zip file: {e})") from None
    with archive:
        wanted = _select_members(archive, path, model_name)
        # mode 0700; resolved so the containment check compares like with like
        tempdir = os.path.realpath(tempfile.mkdtemp(prefix="aoti_cy-"))
        try:
            for info, parts in wanted:
                _extract_member(archive, info, parts, tempdir)
            artifact = _open_directory(tempdir, model_name, tempdir)
            if not allow_executable_stack:
                _clear_stack_request_in_place(artifact, tempdir)
            return artifact
        except BaseException:
            shutil.rmtree(tempdir, ignore_errors=True)
            raise


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


def _select_members(archive, path, model_name):
    """The (info, parts) of the members the runtime needs for ``model_name``:
    its model folder and the package's weights."""
    seen = set()
    models = set()
    wanted = []
    for info in archive.infolist():
        parts = _member_parts(info)
        key = "/".join(parts)
        if key in seen:
            raise PackageError(f"package member {info.filename!r} appears twice")
        seen.add(key)
        if len(parts) < 5 or tuple(parts[1:3]) != MODELS_DIR:
            if len(parts) >= 3 and parts[1:3] == ["data", "weights"] and not info.is_dir():
                wanted.append((info, parts))
            continue
        models.add(parts[3])
        if parts[3] == model_name and not info.is_dir():
            wanted.append((info, parts))
    if model_name not in models:
        raise model_not_found(model_name, path, models)
    _check_sizes(wanted, path)
    return wanted


# Weights are stored, not deflated: a member that inflates more than this is a
# zip bomb, not a model.
MAX_INFLATION = 200
BIG_MEMBER = 64 << 20


def _check_sizes(wanted, path):
    """Refuse zip bombs and packages that would not fit on the temp disk,
    before writing anything."""
    total = 0
    for info, _ in wanted:
        total += info.file_size
        if info.file_size > BIG_MEMBER and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
            raise PackageError(
                f"package member {info.filename!r} of {path} would inflate from "
                f"{info.compress_size} to {info.file_size} bytes: refused as a zip bomb")
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if total > free:
        raise PackageError(
            f"{path} needs {total} bytes in {tempfile.gettempdir()}, only {free} are free")


def _extract_member(archive, info, parts, root):
    target = os.path.join(root, *parts)
    # Belt and braces: the checked parts can only name a path under root.
    if os.path.commonpath([root, os.path.realpath(os.path.dirname(target))]) != root:
        raise PackageError(f"package member {info.filename!r} points outside the package")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out, archive.open(info) as src:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
    except (zipfile.BadZipFile, EOFError, zlib_error()) as e:
        raise PackageError(f"package member {info.filename!r} is corrupt: {e}") from None


def zlib_error():
    import zlib
    return zlib.error
