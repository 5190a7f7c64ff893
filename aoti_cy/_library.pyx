"""Opening model libraries and resolving their C entry points.

A model `.so` is opened once per file (RTLD_NOW | RTLD_LOCAL, so two models
never see each other's symbols) and cached while anything made from it is
alive. Required entry points are checked at load; optional ones are NULL
until a feature asks for them through ``ModelLibrary.require``.

Executable stacks: a library whose ``PT_GNU_STACK`` header asks for one
(every model torch 2.13 links) would make dlopen turn the stack of every
thread executable (glibc < 2.41) or fail (glibc 2.41+). Unless the caller
passes ``allow_executable_stack=True``, such a library is loaded from a
private copy with the request cleared; ``path`` stays the caller's file,
``loaded_path`` is the copy.
"""

import atexit
import os
import threading
import weakref

from libcpp.vector cimport vector
from posix.dlfcn cimport dlopen, dlsym, dlclose, dlerror, RTLD_NOW, RTLD_LOCAL


from aoti_cy.errors import AOTIError, MissingSymbolError, PackageError
from aoti_cy._elf import (asks_for_executable_stack, check_elf, input_check_offsets,
                          stack_flags, stack_text)
from aoti_cy._package import _remove_private_dir, private_library_copy

cdef extern from "<dlfcn.h>" nogil:
    enum: RTLD_DI_LINKMAP
    int dlinfo(void* handle, int request, void* info)

cdef extern from "<link.h>" nogil:
    struct link_map:
        size_t l_addr      # where the library was loaded, minus its link address

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char* dli_fname
        void* dli_fbase
        const char* dli_sname
        void* dli_saddr
    int dladdr(const void* addr, Dl_info* info)

cdef extern from "release_pages.h" nogil:
    size_t aoti_cy_release_file_pages(const char* path)


# Every entry point aoti_cy resolves: its symbol, whether a model must export
# it (torch >= 2.6 models all do), and the AOTIFunctions field that receives
# it, named next to the symbol so the two cannot drift apart.
cdef AOTIFunctions _LAYOUT


cdef Py_ssize_t _slot(void* field):
    """Byte offset of an AOTIFunctions field (given as &_LAYOUT.field)."""
    return <char*>field - <char*>&_LAYOUT


SYMBOLS = (
    ("AOTInductorModelContainerCreate", True, _slot(&_LAYOUT.container_create)),
    ("AOTInductorModelContainerDelete", True, _slot(&_LAYOUT.container_delete)),
    ("AOTInductorModelContainerRun", True, _slot(&_LAYOUT.container_run)),
    ("AOTInductorModelContainerGetNumInputs", True, _slot(&_LAYOUT.container_get_num_inputs)),
    ("AOTInductorModelContainerGetInputName", True, _slot(&_LAYOUT.container_get_input_name)),
    ("AOTInductorModelContainerGetNumOutputs", True, _slot(&_LAYOUT.container_get_num_outputs)),
    ("AOTInductorModelContainerGetOutputName", True, _slot(&_LAYOUT.container_get_output_name)),
    ("AOTInductorModelContainerGetCallSpec", True, _slot(&_LAYOUT.container_get_call_spec)),
    ("AOTInductorModelContainerGetNumConstants", True, _slot(&_LAYOUT.container_get_num_constants)),
    ("AOTInductorModelContainerGetConstantName", True, _slot(&_LAYOUT.container_get_constant_name)),
    ("AOTInductorModelContainerGetConstantOriginalFQN", True, _slot(&_LAYOUT.container_get_constant_original_fqn)),
    ("AOTInductorModelContainerGetConstantFromFolded", True, _slot(&_LAYOUT.container_get_constant_from_folded)),
    ("AOTInductorModelContainerGetConstantDtype", True, _slot(&_LAYOUT.container_get_constant_dtype)),
    ("AOTInductorModelContainerUpdateConstantBuffer", True, _slot(&_LAYOUT.container_update_constant_buffer)),
    ("AOTInductorModelContainerRunConstantFolding", True, _slot(&_LAYOUT.container_run_constant_folding)),
    ("AOTInductorModelContainerSwapConstantBuffer", True, _slot(&_LAYOUT.container_swap_constant_buffer)),
    ("AOTInductorModelCreate", True, _slot(&_LAYOUT.model_create)),
    ("AOTInductorModelRun", True, _slot(&_LAYOUT.model_run)),
    ("AOTInductorModelUpdateConstantsMap", True, _slot(&_LAYOUT.model_update_constants_map)),
    ("AOTInductorModelDelete", True, _slot(&_LAYOUT.model_delete)),
    ("AOTInductorModelGetNumOutputs", True, _slot(&_LAYOUT.model_get_num_outputs)),
    # Optional: NULL when the model's torch release predates them.
    ("AOTInductorModelContainerCreateWithDevice", False, _slot(&_LAYOUT.container_create_with_device)),
    ("AOTInductorModelContainerRunSingleThreaded", False, _slot(&_LAYOUT.container_run_single_threaded)),
    ("AOTInductorModelContainerGetConstantType", False, _slot(&_LAYOUT.container_get_constant_type)),
    ("AOTInductorModelContainerGetConstantDataSize", False, _slot(&_LAYOUT.container_get_constant_data_size)),
    ("AOTInductorModelContainerExtractConstantsMap", False, _slot(&_LAYOUT.container_extract_constants_map)),
    ("AOTInductorModelContainerExtractConstantsMapEntries", False, _slot(&_LAYOUT.container_extract_constants_map_entries)),
    ("AOTInductorModelContainerUpdateUserManagedConstantBuffer", False, _slot(&_LAYOUT.container_update_user_managed_constant_buffer)),
    ("AOTInductorModelContainerUpdateUserManagedConstantBufferPairs", False, _slot(&_LAYOUT.container_update_user_managed_constant_buffer_pairs)),
    ("AOTInductorModelContainerUpdateConstantBufferPairs", False, _slot(&_LAYOUT.container_update_constant_buffer_pairs)),
    ("AOTInductorModelContainerUpdateConstantBufferFromCpu", False, _slot(&_LAYOUT.container_update_constant_buffer_from_cpu)),
    ("AOTInductorModelContainerUpdateConstantBufferFromCpuPairs", False, _slot(&_LAYOUT.container_update_constant_buffer_from_cpu_pairs)),
    ("AOTInductorModelContainerFreeInactiveConstantBuffer", False, _slot(&_LAYOUT.container_free_inactive_constant_buffer)),
    ("AOTInductorModelContainerGetConstantsBlobSize", False, _slot(&_LAYOUT.container_get_constants_blob_size)),
    ("AOTInductorModelUpdateConstantsFromBlob", False, _slot(&_LAYOUT.model_update_constants_from_blob)),
    ("AOTInductorModelCreateV2", False, _slot(&_LAYOUT.model_create_v2)),
    ("AOTInductorModelUpdateConstantsMapV2", False, _slot(&_LAYOUT.model_update_constants_map_v2)),
    ("AOTInductorModelContainerCreateWithExternalConstants", False, _slot(&_LAYOUT.container_create_with_external_constants)),
    ("AOTInductorModelContainerDidCallLoadConstants", False, _slot(&_LAYOUT.container_did_call_load_constants)),
    ("AOTInductorSetUsePinnedAsyncConstantsCopy", False, _slot(&_LAYOUT.set_use_pinned_async_constants_copy)),
    ("AOTInductorGetLastError", False, _slot(&_LAYOUT.get_last_error)),
)
REQUIRED_SYMBOLS = tuple(name for name, required, _ in SYMBOLS if required)
OPTIONAL_SYMBOLS = tuple(name for name, required, _ in SYMBOLS if not required)
_SLOT_OF = {name: slot for name, _, slot in SYMBOLS}

# Every field filled exactly once (checked at import, whatever python -O says).
if sorted(_SLOT_OF.values()) != list(range(0, sizeof(AOTIFunctions), sizeof(void*))):
    raise ImportError("aoti_cy._library: SYMBOLS does not cover AOTIFunctions field "
                      "for field; rebuild after editing either")


cdef str _dlerror():
    cdef const char* message = dlerror()
    return message.decode("utf-8", "replace") if message != NULL else "unknown error"


def _dlopen_failure(path, message, flags):
    """The PackageError for a failed dlopen; for an executable-stack refusal
    (glibc 2.41+), the reason and the ways out."""
    if "executable stack" not in message:
        return PackageError(f"cannot load model library {path}: {message}")
    return PackageError(
        f"cannot load model library {path}: {message}. The library's PT_GNU_STACK "
        f"header asks for an executable stack ({stack_text(flags)}), which this glibc "
        f"(2.41 or later) refuses to enable at dlopen. Load it without "
        f"allow_executable_stack=True: aoti_cy then loads a copy with the request "
        f"cleared (AOTInductor models do not need it). Only if the library really "
        f"needs an executable stack, start Python with "
        f"GLIBC_TUNABLES=glibc.rtld.execstack=2 (where this glibc has that setting), "
        f"which makes the stack of the whole process executable from its start")


cdef int _raise_aoti_error(const char* function, const char* message) except -1 with gil:
    # Apart from check() so that check(), called after every run without the
    # GIL, holds no Python object: Cython would take the GIL to release one
    # even on the success path.
    if message != NULL and message[0] != 0:
        detail = message.decode("utf-8", "replace")
    else:
        detail = ("the runtime printed its reason to stderr (this model "
                  "does not export AOTInductorGetLastError)")
    raise AOTIError(function.decode(), detail)


cdef class ModelLibrary:
    """One opened model `.so` and its resolved C entry points.

    Use :func:`open_library`, which shares one instance per file; the library
    stays loaded while any container or model made from it is alive.
    ``path`` is the file asked for; ``loaded_path`` the file dlopen mapped
    (a private copy where the executable-stack request was cleared);
    ``executable_stack`` whether the mapped file asks for an executable stack.
    """

    def __cinit__(self, str path, str loaded_path=None):
        self._handle = NULL
        self._input_checks_read = False
        self.path = path
        self.loaded_path = loaded_path or path
        flags = stack_flags(self.loaded_path)
        self.executable_stack = asks_for_executable_stack(flags)
        cdef bytes encoded = os.fsencode(self.loaded_path)
        self._handle = dlopen(encoded, RTLD_NOW | RTLD_LOCAL)
        if self._handle == NULL:
            raise _dlopen_failure(self.path, _dlerror(), flags)
        self._refuse_private_libstdcxx()
        self._resolve()

    cdef _refuse_private_libstdcxx(self):
        """A model linked with its own static libstdc++ exports that copy's
        locale machinery; torch's libstdc++ and the model's then disagree and
        the model crashes inside its own container-create. Refuse it here."""
        cdef Dl_info info
        cdef void* symbol = dlsym(self._handle, "_ZNSt6locale7classicEv")
        if symbol == NULL or dladdr(symbol, &info) == 0 or info.dli_fname == NULL:
            return
        if os.path.realpath(os.fsdecode(info.dli_fname)) == self.loaded_path:
            raise PackageError(
                f"{self.path} carries its own static copy of libstdc++ (it exports "
                f"std::locale); such models crash when created. Rebuild the model "
                f"with a compiler that links libstdc++ dynamically, e.g. "
                f"CXX=/usr/bin/g++ CC=/usr/bin/gcc")

    cdef _resolve(self):
        cdef char* table = <char*>&self.fn
        cdef void* entry
        missing = []
        for name, required, slot in SYMBOLS:
            entry = dlsym(self._handle, name.encode())
            (<void**>(table + <Py_ssize_t>slot))[0] = entry
            if entry == NULL and required:
                missing.append(name)
        if missing:
            raise PackageError(
                f"{self.path} is not an AOTInductor model library: it does not "
                f"export {', '.join(missing)}")

    cdef const InputCheckFn* input_checks(self, size_t num_inputs) except? NULL:
        """The model's own input-check functions, one per input (NULL where
        the model has none), or NULL when the library has none at all (it
        is stripped, or its torch generates no such functions).

        Inductor generates ``static void check_input_<i>(AtenTensorHandle*)``
        for every model (see csrc/input_guards.h). Found once per library.
        """
        cdef link_map* loaded = NULL
        cdef Dl_info info
        cdef void* address
        cdef vector[InputCheckFn] found
        if not self._input_checks_read:
            # Built apart and published in one step: another thread may get
            # here while this one reads the file.
            offsets = input_check_offsets(self.loaded_path, num_inputs)
            if offsets and dlinfo(self._handle, RTLD_DI_LINKMAP, &loaded) != 0:
                raise PackageError(f"dlinfo failed for {self.path}: {_dlerror()}")
            found.assign(num_inputs, NULL)
            for index, offset in offsets.items():
                address = <void*>(loaded.l_addr + <size_t>offset)
                # The symbol table belongs to the file we loaded: the address
                # must fall inside this library.
                if (dladdr(address, &info) == 0 or info.dli_fname == NULL or
                        os.path.realpath(os.fsdecode(info.dli_fname)) != self.loaded_path):
                    raise PackageError(
                        f"{self.path}: check_input_{index} lies outside the library")
                found[index] = <InputCheckFn>address
            if not self._input_checks_read:
                self._input_checks.swap(found)
                self._input_checks_found = len(offsets)
                self._input_checks_read = True
        if self._input_checks.size() != num_inputs:
            raise ValueError(
                f"input checks were read for {self._input_checks.size()} inputs, "
                f"not {num_inputs}")
        if self._input_checks_found == 0:
            return NULL
        return self._input_checks.data()

    def __dealloc__(self):
        if self._handle != NULL:
            dlclose(self._handle)
            self._handle = NULL

    def exported(self):
        """Map each optional entry point's name to whether this library exports it."""
        cdef char* table = <char*>&self.fn
        return {name: (<void**>(table + <Py_ssize_t>_SLOT_OF[name]))[0] != NULL
                for name in OPTIONAL_SYMBOLS}

    def _forget(self, str symbol):
        """Tests only: act as if this library did not export the optional
        entry point ``symbol`` (as a model from an older torch would not)."""
        cdef char* table = <char*>&self.fn
        if symbol not in OPTIONAL_SYMBOLS:
            raise ValueError(f"{symbol} is not an optional entry point")
        (<void**>(table + <Py_ssize_t>_SLOT_OF[symbol]))[0] = NULL

    cdef int require(self, const void* entry, const char* symbol) except -1:
        """Raise MissingSymbolError when an optional entry point is absent."""
        if entry == NULL:
            raise MissingSymbolError(symbol.decode(), self.path)
        return 0

    cdef int check(self, AOTIRuntimeError status, const char* function) except -1 nogil:
        """The one place a C status becomes an exception."""
        if status == AOTI_RUNTIME_SUCCESS:
            return 0
        # The runtime keeps its message per thread until the next call; read it
        # here, on the failing thread, before anything else calls in.
        cdef const char* message = NULL
        if self.fn.get_last_error != NULL:
            if self.fn.get_last_error(&message) != AOTI_RUNTIME_SUCCESS:
                message = NULL
        return _raise_aoti_error(function, message)

    def release_file_pages(self):
        """Drop this library's read-only file pages from memory.

        A CPU model copies its embedded weights out of the `.so` into its own
        buffer when a container is created; the pages it read them from would
        otherwise stay resident, a second copy of the weights. Dropping
        read-only, unmodified file pages loses nothing: a later read faults
        them back in from the file. Returns the bytes advised.
        """
        cdef bytes path = os.fsencode(self.loaded_path)
        return aoti_cy_release_file_pages(path)

    def __repr__(self):
        return f"<aoti_cy.ModelLibrary {self.path!r}>"


# (path, keeps an executable stack) -> ModelLibrary, and each library's file
# identity, while it is alive.
_libraries = weakref.WeakValueDictionary()
_identities = weakref.WeakKeyDictionary()
_libraries_lock = threading.Lock()


# The private copies made of libraries that ask for an executable stack,
# by the source file's identity, for the life of the process: a model
# library is rarely unloaded by dlclose (its C++ unique symbols pin it), so
# a fresh copy per load would map one more library each time, while the
# same copy is matched by dlopen to the library already mapped.
_copies = {}


def _open_new(path, flags, keep, identity):
    """A new ModelLibrary for ``path``, from a private copy without the
    executable-stack request where it has one and ``keep`` is false."""
    if keep or not asks_for_executable_stack(flags):
        return ModelLibrary(path)
    key = (path, identity)
    if key not in _copies:
        copy, folder = private_library_copy(path)
        # Removed at exit (a removed file would stay mapped; the folder
        # would not show, but the disk space would stay taken until exit).
        atexit.register(_remove_private_dir, folder, os.getpid())
        _copies[key] = copy
    return ModelLibrary(path, _copies[key])


def open_library(path, *, allow_executable_stack=False):
    """The ModelLibrary for the model `.so` at ``path``, opened once per file.

    A library that asks for an executable stack is loaded from a private
    copy with the request cleared (one copy per version of the file, kept
    until the process exits), unless ``allow_executable_stack``: then
    the file itself is loaded, and the process stack becomes executable.
    """
    path = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"model library not found: {path}") from None
    identity = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _libraries_lock:
        check_elf(path)
        flags = stack_flags(path)
        keep = bool(allow_executable_stack) and asks_for_executable_stack(flags)
        key = (path, keep)
        library = _libraries.get(key)
        if library is None:
            library = _open_new(path, flags, keep, identity)
            _libraries[key] = library
            _identities[library] = identity
        elif _identities.get(library) != identity:
            # dlopen matches a loaded library by path: it would hand back the
            # old code for the new file.
            raise PackageError(
                f"{path} changed on disk while the previous version is still "
                f"loaded; close every container made from it first")
        return library
