"""The one reader of the `.pt2` archive: :class:`PackageIndex`.

It reads a package's table of contents once, checks every member (no
absolute paths, no ``..``, no links, no duplicates, sizes and inflation
bounded), and answers which models it holds, each model's metadata and
device, and the members a model needs; it extracts them safely. Everything
else in aoti_cy (loading, the torch-compatible loader, the CLI, Ray
deployments) asks it, through :mod:`aoti_cy._package`; nothing else opens the
zip.
"""

import io
import json
import os
import shutil
import stat
import zipfile
import zlib

from aoti_cy.errors import PackageError, model_not_found

__all__ = ["DEVICE_KEY", "METADATA_LIMIT", "MODELS_DIR", "NotAZipError", "PackageIndex", "PackagedModel",
           "WEIGHTS_DIR", "parse_metadata", "read_small_file"]

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
                index._parse_into(model, lambda: read_small_file(path))
        return index

    def _parse_into(self, model, read):
        try:
            model._metadata = parse_metadata(read(), model.metadata_file)
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


def read_small_file(path):
    try:
        if os.path.getsize(path) > METADATA_LIMIT:
            raise PackageError(f"{path} is too large to be model metadata")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PackageError(f"cannot read model metadata {path}: {e}") from None


def parse_metadata(data, where):
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
