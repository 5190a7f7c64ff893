"""Reading the artifacts aoti_cy loads: a `.pt2` package, an extracted
package directory, or a bare model `.so`.

:class:`PackageIndex` is the one reader of the `.pt2` archive: it reads a
package's table of contents once, checks every member, and answers which
models it holds, each model's metadata and device, and the members a model
needs. Everything else in aoti_cy (loading, the torch-compatible loader, the
CLI, Ray deployments) asks it; nothing else opens the zip.

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

import io
import json
import mmap
import os
import shutil
import stat
import tempfile
import weakref
import zipfile
import zlib

from aoti_cy import _cpp_build, _elf
from aoti_cy.errors import PackageError, model_not_found

__all__ = ["Artifact", "NotAZipError", "PackageIndex", "PackageWeights", "list_models",
           "open_artifact", "private_library_copy"]

# Where a package keeps its models and its pickled weights, under its one
# top-level folder: <root>/data/aotinductor/<model>/..., <root>/data/weights/...
MODELS_DIR = ("data", "aotinductor")
WEIGHTS_DIR = ("data", "weights")
DEVICE_KEY = "AOTI_DEVICE_KEY"
# torch writes a few hundred bytes of metadata; more than this is not metadata.
METADATA_LIMIT = 4 << 20
# Weights are stored, not deflated: a member that inflates more than this is a
# zip bomb, not a model.
MAX_INFLATION = 200
BIG_MEMBER = 64 << 20
_COPY_CHUNK = 1 << 20
_CORRUPT = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError)


class NotAZipError(PackageError):
    """The file given as a `.pt2` is not a zip archive at all."""


# ---- the index ------------------------------------------------------------------


class PackagedModel:
    """One model of a package, as :class:`PackageIndex` found it.

    Attributes
    ----------
    name : str
        The model's name (its folder under ``data/aotinductor``).
    files : tuple of str
        Its files, as ``/``-separated paths relative to its folder.
    metadata_file : str or None
        The file of ``files`` holding its metadata, None when it has none.
    """

    def __init__(self, name, files, metadata_file):
        self.name = name
        self.files = files
        self.metadata_file = metadata_file
        self._metadata = None
        self._metadata_error = None

    @property
    def top_files(self):
        """The files directly in the model's folder."""
        return tuple(f for f in self.files if "/" not in f)

    def __repr__(self):
        return f"PackagedModel({self.name!r}, {len(self.files)} files)"


class PackageIndex:
    """The table of contents of an AOTInductor package, read and checked once.

    Build one with :meth:`read`. Reading checks every member of a `.pt2`
    (no absolute path, no ``..``, no symbolic link, no duplicate, no member
    that inflates like a zip bomb, one top-level folder for the package),
    finds the models and their files, and reads each model's metadata.

    Rules, the same for every caller:

    - A model is a folder ``<root>/data/aotinductor/<name>/``; the package's
      pickled weights, shared by its models, are ``<root>/data/weights/*``.
    - A model's metadata is the JSON object torch writes beside its wrapper:
      ``<stem>.wrapper_metadata.json`` (the name torch 2.13 writes), else
      ``<stem>_metadata.json`` beside the model's ``.so`` or ``.cpp`` (older
      packages); a kernel's ``*.kernel_metadata.json`` is never the model's.
      Every value must be a string, as torch's reader requires. A model
      without metadata has ``{}``.
    - A model's device is its metadata's ``AOTI_DEVICE_KEY``. A model whose
      metadata has no such key (or an empty one) names no device:
      :meth:`device` answers None, and loading it needs an explicit device,
      as torch's loader refuses it ("No device information found.").
    """

    def __init__(self, origin, kind, root, models, weights, source):
        self.origin = origin        # what to call the package in messages
        self.kind = kind            # "zip" or "directory"
        self.root = root            # zip: the top-level folder; directory: its path
        self._models = models       # name -> PackagedModel
        self.weights = weights      # zip: member names; directory: file names
        self._source = source       # zip: the path or the bytes; directory: None
        self._infos = {}            # zip: member name -> (size, CRC) as read

    # -- reading --

    @classmethod
    def read(cls, source):
        """The index of ``source``.

        Parameters
        ----------
        source : str, os.PathLike, bytes, bytearray or memoryview
            A `.pt2` file, an extracted package directory, or the bytes of
            a `.pt2` held in memory.

        Returns
        -------
        PackageIndex

        Raises
        ------
        FileNotFoundError
            No file or folder at ``source``.
        NotAZipError
            ``source`` is a file, or bytes, that is not a zip archive.
        PackageError
            An unsafe or corrupt member, or a directory that holds no
            package.
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls._read_zip(bytes(source), "the package bytes")
        path = os.fspath(source)
        if os.path.isdir(path):
            return cls._read_directory(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such model package: {path}")
        return cls._read_zip(path, path)

    @classmethod
    def _read_zip(cls, source, origin):
        try:
            archive = _open_zip(source)
        except zipfile.BadZipFile as e:
            raise NotAZipError(f"{origin} is not a .pt2 package (not a zip file: {e})") from None
        except OSError as e:
            raise PackageError(f"cannot read {origin}: {e}") from None
        with archive:
            members = _checked_members(archive.infolist(), origin)
            roots = {parts[0] for parts, _ in members.values()
                     if _in(parts, MODELS_DIR) or _in(parts, WEIGHTS_DIR)}
            if len(roots) > 1:
                raise PackageError(
                    f"{origin} keeps models or weights under several top-level folders "
                    f"({', '.join(sorted(map(repr, roots)))}); a package has one")
            files, weights = {}, []
            for key, (parts, info) in members.items():
                if _in(parts, MODELS_DIR) and len(parts) >= 5:
                    model_files = files.setdefault(parts[3], [])
                    if not info.is_dir():
                        model_files.append("/".join(parts[4:]))
                elif _in(parts, WEIGHTS_DIR) and len(parts) >= 4 and not info.is_dir():
                    weights.append(key)
            models = {name: _model_entry(name, names) for name, names in files.items()}
            index = cls(origin, "zip", roots.pop() if roots else None, models,
                        tuple(sorted(weights)), source)
            index._infos = {key: (info.file_size, info.CRC)
                            for key, (_, info) in members.items() if not info.is_dir()}
            for model in models.values():
                if model.metadata_file is not None:
                    member = members[index._model_member(model.name, model.metadata_file)][1]
                    index._parse_into(model, lambda: _read_small(archive, member, origin))
        return index

    @classmethod
    def _read_directory(cls, directory):
        root = _package_root(directory)
        models_dir = os.path.join(root, *MODELS_DIR)
        models = {}
        for name in os.listdir(models_dir):
            folder = os.path.join(models_dir, name)
            if os.path.isdir(folder):
                models[name] = _model_entry(name, _files_under(folder))
        weights_dir = os.path.join(root, *WEIGHTS_DIR)
        weights = (tuple(sorted(os.listdir(weights_dir)))
                   if os.path.isdir(weights_dir) else ())
        index = cls(directory, "directory", root, models, weights, None)
        for model in models.values():
            if model.metadata_file is not None:
                path = os.path.join(models_dir, model.name, model.metadata_file)
                index._parse_into(model, lambda: _read_small_file(path))
        return index

    def _parse_into(self, model, read):
        try:
            model._metadata = _parse_metadata(read(), model.metadata_file)
        except PackageError as e:
            model._metadata_error = e   # raised when this model is asked for

    # -- answers --

    @property
    def model_names(self):
        """The names of the package's models, sorted."""
        return tuple(sorted(self._models))

    def model(self, model_name):
        """The :class:`PackagedModel` named ``model_name``.

        Raises
        ------
        ModelNotFoundError
            The package holds no such model (the message lists those it holds).
        """
        try:
            return self._models[model_name]
        except KeyError:
            raise model_not_found(model_name, self.origin, self._models) from None

    def metadata(self, model_name):
        """The metadata of ``model_name`` (str -> str; {} when it has none).

        Raises
        ------
        ModelNotFoundError
            No such model.
        PackageError
            Its metadata is not a JSON object of strings.
        """
        model = self.model(model_name)
        if model._metadata_error is not None:
            raise PackageError(f"the metadata of model {model_name!r} in {self.origin}: "
                               f"{model._metadata_error}")
        return dict(model._metadata or {})

    def device(self, model_name):
        """The device ``model_name`` was compiled for, as its metadata names it
        (``"cpu"``, ``"cuda"``, ...), or None when the metadata names none."""
        return self.metadata(model_name).get(DEVICE_KEY) or None

    def members(self, model_name):
        """The members to extract for ``model_name``: the files of its folder
        and the package's pickled weights (zip member names for a `.pt2`,
        paths for a directory)."""
        model = self.model(model_name)
        if self.kind == "directory":
            model_dir = self.model_dir(model_name)
            return tuple(os.path.join(model_dir, *f.split("/")) for f in model.files) + tuple(
                os.path.join(self.weights_dir(), w) for w in self.weights)
        return tuple(self._model_member(model.name, f) for f in model.files) + self.weights

    def model_dir(self, model_name, root=None):
        """The folder of ``model_name`` under ``root`` (a directory index's own
        folder by default; where a `.pt2` is extracted to otherwise)."""
        base = self.root if root is None else os.path.join(root, *(
            (self.root,) if self.kind == "zip" else ()))
        return os.path.join(base, *MODELS_DIR, self.model(model_name).name)

    def weights_dir(self, root=None):
        """The folder of the package's pickled weights under ``root``."""
        base = self.root if root is None else os.path.join(root, *(
            (self.root,) if self.kind == "zip" else ()))
        return os.path.join(base, *WEIGHTS_DIR)

    def _model_member(self, model_name, relative):
        return "/".join((self.root, *MODELS_DIR, model_name, relative))

    # -- extraction --

    def extract(self, model_name, into):
        """Write the members of ``model_name`` (see :meth:`members`) under the
        folder ``into``, refusing a package that would not fit on its disk,
        or that changed since it was read. Only for a `.pt2`."""
        if self.kind != "zip":
            raise ValueError("only a .pt2 package is extracted")
        wanted = self.members(model_name)
        _check_free_space(sum(self._infos[m][0] for m in wanted), into, self.origin)
        try:
            archive = _open_zip(self._source)
        except (zipfile.BadZipFile, OSError) as e:
            raise PackageError(f"cannot read {self.origin} again to extract it: {e}") from None
        with archive:
            now = _checked_members(archive.infolist(), self.origin)
            for member in wanted:
                info = now.get(member, (None, None))[1]
                if info is None or (info.file_size, info.CRC) != self._infos[member]:
                    raise PackageError(f"{self.origin} changed while it was being read "
                                       f"(member {member!r})")
                _extract_member(archive, info, member.split("/"), into)


def _open_zip(source):
    return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)


def _in(parts, folder):
    return tuple(parts[1:1 + len(folder)]) == folder


def _checked_members(infos, origin):
    """{name: (parts, info)} for every member, after the path checks."""
    members = {}
    for info in infos:
        parts = _checked_parts(info)
        key = "/".join(parts)
        if key in members:
            raise PackageError(f"package member {info.filename!r} of {origin} appears twice")
        if (info.file_size > BIG_MEMBER
                and info.file_size > MAX_INFLATION * max(info.compress_size, 1)):
            raise PackageError(
                f"package member {info.filename!r} of {origin} would inflate from "
                f"{info.compress_size} to {info.file_size} bytes: refused as a zip bomb")
        members[key] = (parts, info)
    return members


def _checked_parts(info):
    """The checked path components of a zip member, or a PackageError."""
    name = info.filename
    if "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"package member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PackageError(f"package member {name!r} points outside the package")
    if not parts:
        raise PackageError(f"package member {name!r} has no name")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise PackageError(f"package member {name!r} is a symbolic link")
    return parts


def _model_entry(name, files):
    files = tuple(sorted(files))
    metadata_file, error = _metadata_file([f for f in files if "/" not in f])
    model = PackagedModel(name, files, metadata_file)
    model._metadata_error = error
    return model


def _metadata_file(files):
    """``(name, error)``: which of a model folder's ``files`` is the model's
    metadata (None: it has none), or why none can be told."""
    wrapper = [f for f in files if f.endswith(".wrapper_metadata.json")]
    if len(wrapper) == 1:
        return wrapper[0], None
    main = _main_file(files)
    beside = main.rsplit(".", 1)[0] + "_metadata.json" if main else None
    if beside in files:
        return beside, None
    others = wrapper or [f for f in files if f.endswith("_metadata.json")
                         and not f.endswith(".kernel_metadata.json")]
    if len(others) > 1:
        return None, PackageError(
            f"several metadata files and none beside the model's library: "
            f"{', '.join(others)}")
    return (others[0] if others else None), None


def _main_file(files):
    """The model's wrapper library, else its wrapper source; None when no
    single one can be told (the load then says why)."""
    for suffix in (".so", ".cpp"):
        found = [f for f in files if f.endswith(suffix)]
        wrappers = [f for f in found if ".wrapper" in f]
        if len(wrappers) == 1:
            return wrappers[0]
        if len(found) == 1:
            return found[0]
    return None


def _read_small(archive, info, origin):
    member = info.filename
    if info.file_size > METADATA_LIMIT:
        raise PackageError(f"package member {member!r} of {origin} is {info.file_size} "
                           f"bytes: too large to be model metadata")
    try:
        return archive.read(info)
    except _CORRUPT as e:
        raise PackageError(f"package member {member!r} of {origin} is corrupt: {e}") from None


def _read_small_file(path):
    try:
        if os.path.getsize(path) > METADATA_LIMIT:
            raise PackageError(f"{path} is too large to be model metadata")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PackageError(f"cannot read model metadata {path}: {e}") from None


def _parse_metadata(data, where):
    """Model metadata as torch's reader takes it: a JSON object of strings."""
    try:
        metadata = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise PackageError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise PackageError(f"{where} is not a JSON object")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise PackageError(f"{where} holds a {type(value).__name__} for {key!r}; "
                               f"model metadata values are strings")
    return metadata


def _files_under(folder):
    found = []
    for dirpath, _, filenames in os.walk(folder):
        relative = os.path.relpath(dirpath, folder)
        for f in filenames:
            found.append(f if relative == "." else "/".join((*relative.split(os.sep), f)))
    return found


def _package_root(directory):
    """The folder of an extracted package that holds data/aotinductor."""
    if os.path.isdir(os.path.join(directory, *MODELS_DIR)):
        return directory
    for entry in sorted(os.listdir(directory)):
        candidate = os.path.join(directory, entry)
        if os.path.isdir(os.path.join(candidate, *MODELS_DIR)):
            return candidate
    raise PackageError(f"{directory} holds no AOTInductor package (no data/aotinductor)")


def _check_free_space(total, into, origin):
    free = shutil.disk_usage(into).free
    if total > free:
        raise PackageError(f"{origin} needs {total} bytes in {into}, only {free} are free")


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
    except _CORRUPT as e:
        raise PackageError(f"package member {info.filename!r} is corrupt: {e}") from None


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

    def load_weights_into(self, container):
        """Deprecated: give ``container`` the weights of :meth:`weights`."""
        weights = self.weights()
        if weights.blob is not None:
            with weights.blob as buffer:
                container.update_constants_from_blob(buffer)
        state = weights.state_dict()
        if state is not None:
            container.update_constant_buffer(state, validate_full_update=True)

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
    return _parse_metadata(_read_small_file(candidate), f"model metadata {candidate}")


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

