"""The public C API (capi.pxd) cannot change without a version bump, and
holds no layout.

Consumers compiled against aoti_cy bind its C functions by name and signature
(Cython's __pyx_capi__). This test compares what the built module exports
with tests/capi_snapshot.json and fails when they differ while
AOTI_CY_CAPI_VERSION stayed the same. After a deliberate change: bump the
version in aoti_cy/capi.pxd, rebuild, and run
``python tests/test_capi.py --update``.
"""

import ctypes
import json
import os
import re
import sys

from aoti_cy import capi, interface

SNAPSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "capi_snapshot.json")
PACKAGE = os.path.dirname(os.path.abspath(capi.__file__))

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]


def _pxd_text(name):
    """A .pxd of the package without its comments."""
    with open(os.path.join(PACKAGE, name)) as f:
        return re.sub(r"#[^\n]*", "", f.read())


def _declared_functions():
    """The function declarations of capi.pxd (exception specifications and
    nogil are not in the exported signatures)."""
    return sorted(" ".join(match.split()) for match in re.findall(
        r"^cdef (?!class|enum|extern)[^\n]*\([^)]*\)[^\n]*", _pxd_text("capi.pxd"), re.M))


def current_api():
    return {
        "version": capi.CAPI_VERSION,
        "declarations": _declared_functions(),
        "functions": {name: _get_name(capsule).decode()
                      for name, capsule in sorted(capi.__pyx_capi__.items())},
    }


def test_public_c_api_matches_its_snapshot():
    with open(SNAPSHOT) as f:
        snapshot = json.load(f)
    current = current_api()
    if current == snapshot:
        return
    changed = sorted(key for key in ("declarations", "functions")
                     if current[key] != snapshot[key])
    if current["version"] == snapshot["version"]:
        raise AssertionError(
            f"the public C API ({', '.join(changed)}) changed but "
            f"AOTI_CY_CAPI_VERSION is still {current['version']}: already-built "
            f"consumers would break. Bump it in aoti_cy/capi.pxd, rebuild, "
            f"and run `python tests/test_capi.py --update`")
    raise AssertionError("AOTI_CY_CAPI_VERSION changed: refresh the snapshot with "
                         "`python tests/test_capi.py --update`")


def test_the_public_face_holds_no_layout():
    # No class, no field, no method: a container is an opaque pointer, so
    # aoti_cy's classes can change without touching a consumer.
    text = _pxd_text("capi.pxd")
    assert not re.search(r"^cdef class|^    cdef ", text, re.M)
    assert "ctypedef struct Container" in text
    assert not re.search(r"libcpp|cppclass", text)     # consumers may compile as C
    for cimported in re.findall(r"^from (\S+) cimport", text, re.M):
        assert cimported == "aoti_cy.includes.handles", cimported
    assert "libcpp" not in _pxd_text(os.path.join("includes", "handles.pxd"))
    assert set(capi.__pyx_capi__) == {
        "capi_version", "container_of", "num_inputs", "num_outputs", "run_handles",
        "handle_from_tensor", "tensor_from_handle", "new_handle_ref", "free_handles"}


def test_the_classes_module_exports_no_c_functions():
    # interface.pxd is aoti_cy's own: nothing of it is bound by consumers.
    assert not getattr(interface, "__pyx_capi__", {})
    assert "AOTI_CY_CAPI_VERSION" not in _pxd_text("interface.pxd")


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    with open(SNAPSHOT, "w") as f:
        json.dump(current_api(), f, indent=2)
        f.write("\n")
    print("wrote", SNAPSHOT)
