"""Building the model library of a package that ships C++ sources only
(compiled with ``aot_inductor.package_cpp_only=True``).

Such a package holds the wrapper ``<stem>.cpp``, the flags torch chose for it
(``<stem>_compile_flags.json``, ``<stem>_linker_flags.json``), object files
(the weights' ``.o``, GPU kernels) and possibly ``<stem>_serialized_weights.bin``.
torch's loader builds it at every load (``compile_so`` in
``model_package_loader.cpp``): compile the ``.cpp``, link it with the
package's objects, append the serialized weights page-aligned to the ``.so``.
aoti_cy does the same with torch's own build helpers (``BuildOptionsBase``
and ``CppBuilder`` from ``torch._inductor.cpp_builder``) and the recorded
flags, but with the system compiler (``/usr/bin/g++``: a compiler that links
libstdc++ statically gives a library aoti_cy refuses), and once: the result
is kept in a cache folder under a hash of everything that goes into it.

The library is linked with ``-z noexecstack``: the package's weights object
is assembled without a ``.note.GNU-stack`` note, from which the linker would
otherwise conclude that the library needs an executable stack (see
``_elf.stack_flags``); nothing inductor generates does.

Cache entries are built in a private folder beside the cache and renamed into
place, so a reader never sees half a library and an entry never changes once
there (``ModelLibrary`` refuses a library replaced on disk); concurrent
loads of one package wait on a lock file instead of building twice.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import sysconfig
import tempfile

from aoti_cy.errors import PackageError

__all__ = ["build_cache_dir", "build_library", "ships_sources_only"]

SYSTEM_CXX = "/usr/bin/g++"
# Moves with every change to how libraries are built: 3 links with -z noexecstack,
# 4 keeps the wrapper source beside the library (its shape contract).
_KEY_VERSION = "aoti_cy-cpp-build-4"
_NO_EXECUTABLE_STACK_COMPILE = "-Wa,--noexecstack"
_NO_EXECUTABLE_STACK_LINK = "-Wl,-z,noexecstack"
_PAGE = 16384   # torch pads the .so to this before appending mmapped weights
_SCRIPT = re.compile(r"--script=[^,\s]*script\.ld")
_OUTPUT_LIMIT = 6000


def build_cache_dir():
    """The folder built libraries are cached in: ``AOTI_CY_BUILD_CACHE``, else
    ``$XDG_CACHE_HOME/aoti_cy/builds`` (``~/.cache/aoti_cy/builds``)."""
    explicit = os.environ.get("AOTI_CY_BUILD_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "aoti_cy", "builds")


def ships_sources_only(files):
    """Whether a model folder's ``files`` hold C++ sources and no library."""
    return (not any(f.endswith(".so") for f in files)
            and any(f.endswith(".cpp") for f in files))


def build_library(model_dir, files):
    """Path of the model library built from ``model_dir``'s sources: taken
    from the cache when it is there, else built and cached. Beside it lie the
    package's metadata and extern-node ``.json`` under the library's stem."""
    cpp = _wrapper_source(files, model_dir)
    stem = cpp[:-len(".cpp")]
    compile_flags = _read_flags(model_dir, stem + "_compile_flags.json")
    link_flags = _read_flags(model_dir, stem + "_linker_flags.json")
    cxx = os.environ.get("AOTI_CY_CXX") or (
        SYSTEM_CXX if os.path.exists(SYSTEM_CXX) else compile_flags.get("compiler") or "g++")
    # Keyed by the flags as recorded: localising them looks at which folders
    # exist, which a build itself can change.
    key = _cache_key(model_dir, files, cxx, compile_flags, link_flags)
    compile_flags = _localised(compile_flags, cxx)
    link_flags = _localised(link_flags, cxx)
    if "clang" not in os.path.basename(cxx):
        # At the -O3 of these builds GCC rewrites the signature of the static
        # check_input_<i> functions (IPA-SRA clones): aoti_cy's input checks
        # call them by their declared signature, so keep it. The arithmetic
        # of the kernels is unchanged.
        compile_flags["cflags"] = [*compile_flags.get("cflags", ()), "fno-ipa-sra"]
    root = build_cache_dir()
    entry = os.path.join(root, key)
    library = os.path.join(entry, stem + ".so")
    if os.path.isfile(library):
        return library
    os.makedirs(root, exist_ok=True)
    with _locked(os.path.join(root, key + ".lock")):
        if not os.path.isfile(library):   # another process may have built it
            _build_entry(entry, model_dir, files, stem, compile_flags, link_flags, cxx)
    return library


def _wrapper_source(files, model_dir):
    sources = [f for f in files if f.endswith(".cpp")]
    wrappers = [f for f in sources if f.endswith(".wrapper.cpp")]
    if len(wrappers) == 1:
        return wrappers[0]
    if len(sources) == 1:
        return sources[0]
    raise PackageError(f"{model_dir} ships C++ sources {', '.join(sources)}, and no single "
                       f"wrapper source among them to build the model from")


def _read_flags(model_dir, name):
    path = os.path.join(model_dir, name)
    try:
        with open(path) as f:
            flags = json.load(f)
    except FileNotFoundError:
        raise PackageError(
            f"{model_dir} ships C++ sources without {name}: the flags torch recorded to "
            f"build them are missing, so the model cannot be built") from None
    except (OSError, ValueError) as e:
        raise PackageError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(flags, dict):
        raise PackageError(f"{path} is not a JSON object")
    return flags


def _localised(flags, cxx):
    """The recorded flags with the compiler to use, and the torch and Python
    folders of the machine that compiled the package replaced by this one's
    where they do not exist here (a package built in another environment)."""
    flags = dict(flags, compiler=cxx)
    flags["include_dirs"] = [_local_dir(d, "include") for d in flags.get("include_dirs") or ()]
    flags["libraries_dirs"] = [_local_dir(d, "lib") for d in flags.get("libraries_dirs") or ()]
    return flags


def _local_dir(path, kind):
    if os.path.isdir(path):
        return path
    marker = os.sep + "torch" + os.sep
    if marker in path + os.sep:
        import torch
        torch_dir = os.path.dirname(torch.__file__)
        rest = (path + os.sep).split(marker, 1)[1].rstrip(os.sep)
        return os.path.join(torch_dir, rest) if rest else torch_dir
    if kind == "include" and re.search(r"include/python\d", path):
        return sysconfig.get_paths()["include"]
    if kind == "lib" and re.search(r"python\d|pyenv|conda", path):
        return sysconfig.get_config_var("LIBDIR") or path
    return path


def _cache_key(model_dir, files, cxx, compile_flags, link_flags):
    """A hash of every input of the build: the package's files (not its
    weights blob, loaded at run time), the flags, the compiler, the torch the
    library links against, and the CPU where the flags say -march=native."""
    import torch
    digest = hashlib.sha256()
    resolved = shutil.which(cxx) or cxx
    try:
        st = os.stat(resolved)
        compiler_id = (os.path.realpath(resolved), st.st_size, st.st_mtime_ns)
    except OSError:
        compiler_id = (cxx,)
    parts = [_KEY_VERSION, torch.__version__, repr(compiler_id),
             json.dumps(compile_flags, sort_keys=True), json.dumps(link_flags, sort_keys=True)]
    if "march=native" in compile_flags.get("cflags", ()):
        parts.append(_cpu_flags())
    digest.update("\n".join(parts).encode())
    for name in sorted(files):
        path = os.path.join(model_dir, name)
        if name.endswith(".blob") or not os.path.isfile(path):
            continue
        digest.update(b"\0" + name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


class _locked:
    """An exclusive flock on ``path`` for the duration of a with block."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _build_entry(entry, model_dir, files, stem, compile_flags, link_flags, cxx):
    """Build into a private folder beside ``entry``, then rename it into place."""
    root = os.path.dirname(entry)
    work = tempfile.mkdtemp(prefix="." + os.path.basename(entry)[:12] + "-", dir=root)
    try:
        library = _compile_and_link(work, model_dir, files, stem, compile_flags,
                                    link_flags, cxx, log_path=entry + ".log")
        weights = os.path.join(model_dir, stem + "_serialized_weights.bin")
        if os.path.isfile(weights):
            _append_weights(library, weights)
        # The metadata and extern-node files are read beside the library, and
        # the wrapper source (the shape contract of its inputs).
        for suffix in ("_metadata.json", ".json", ".cpp"):
            if stem + suffix in files:
                shutil.copyfile(os.path.join(model_dir, stem + suffix),
                                os.path.join(work, stem + suffix))
        for name in os.listdir(work):
            path = os.path.join(work, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif name not in (stem + ".so", stem + ".cpp") and not name.endswith(".json"):
                os.unlink(path)   # the object file
            else:
                os.chmod(path, 0o555 if name.endswith(".so") else 0o444)
        os.chmod(work, 0o755)
        try:
            os.rename(work, entry)
        except OSError:
            if not os.path.isfile(os.path.join(entry, stem + ".so")):
                raise
            # Built meanwhile by a process that did not take the lock: keep
            # that one (it may be loaded already), drop ours.
    finally:
        if os.path.isdir(work):
            shutil.rmtree(work, ignore_errors=True)


def _compile_and_link(work, model_dir, files, stem, compile_flags, link_flags, cxx, log_path):
    from torch._inductor.cpp_builder import BuildOptionsBase, CppBuilder

    def options(flags):
        known = BuildOptionsBase.__init__.__code__.co_varnames
        return BuildOptionsBase(**{k: v for k, v in flags.items() if k in known})

    script = os.path.join(model_dir, "script.ld")
    link_flags = dict(link_flags, passthrough_args=[
        *(_SCRIPT.sub("--script=" + script, arg) for arg in link_flags.get("passthrough_args") or ()),
        _NO_EXECUTABLE_STACK_LINK])
    compile_flags = dict(compile_flags, passthrough_args=[
        *(compile_flags.get("passthrough_args") or ()), _NO_EXECUTABLE_STACK_COMPILE])
    compile_step = CppBuilder(name=stem, sources=os.path.join(model_dir, stem + ".cpp"),
                              BuildOption=options(compile_flags), output_dir=work)
    _run(compile_step, "compiling", cxx, model_dir, log_path)
    objects = [os.path.join(model_dir, f) for f in sorted(files) if f.endswith(".o")]
    link_step = CppBuilder(name=stem, sources=[compile_step.get_target_file_path(), *objects],
                           BuildOption=options(link_flags), output_dir=work)
    _run(link_step, "linking", cxx, model_dir, log_path)
    return link_step.get_target_file_path()


def _run(builder, step, cxx, model_dir, log_path):
    from torch._inductor.exc import CppCompileError
    try:
        builder.build()
    except CppCompileError as e:
        output = getattr(e, "output", None) or str(e)
        raise PackageError(_failure_message(step, cxx, model_dir, builder, output,
                                            log_path)) from None
    except FileNotFoundError as e:
        raise PackageError(
            f"{step} the C++ sources of {model_dir} needs a C++ compiler: {cxx} was "
            f"not found ({e}); install g++ or name one in AOTI_CY_CXX") from None


def _failure_message(step, cxx, model_dir, builder, output, log_path):
    """What the compiler said: its error lines first, then the end of its
    output; all of it is written to ``log_path``."""
    command = builder.get_command_line()
    try:
        with open(log_path, "w") as log:
            log.write(f"$ {command}\n{output}")
        where = f"; full compiler output in {log_path}"
    except OSError:
        where = ""
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    shown = "\n".join(errors[:20])
    tail = output[-(_OUTPUT_LIMIT - len(shown)):] if len(output) > _OUTPUT_LIMIT else output
    if shown and shown not in tail:
        tail = f"{shown}\n...\n{tail}"
    return (f"{step} the C++ sources of the model in {model_dir} failed (compiler "
            f"{cxx}){where}. Command: {command}\nCompiler output:\n{tail}")


def _append_weights(library, weights):
    """Append the mmapped weights page-aligned to the library, as torch does."""
    with open(library, "ab") as out, open(weights, "rb") as src:
        size = out.tell()
        out.write(b" " * (_PAGE - size % _PAGE))
        shutil.copyfileobj(src, out, 1 << 20)
