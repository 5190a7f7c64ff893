"""The public C API (interface.pxd) cannot change without a version bump.

Consumers compiled against aoti_cy bind its C functions by name and signature
and lay out its classes as the .pxd declared them. This test compares what the
built module exports with tests/capi_snapshot.json and fails when they differ
while AOTI_CY_CAPI_VERSION stayed the same. After a deliberate change: bump
the version in aoti_cy/interface.pxd, rebuild, and run
``python tests/test_capi.py --update``.
"""

import ctypes
import json
import os
import re
import sys

import aoti_cy
from aoti_cy import interface

SNAPSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "capi_snapshot.json")
PXD = os.path.join(os.path.dirname(os.path.abspath(interface.__file__)), "interface.pxd")

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]


def _pxd_text():
    """interface.pxd without its comments."""
    with open(PXD) as f:
        return re.sub(r"#[^\n]*", "", f.read())


def _declared_fields():
    """Class name -> its `cdef` field declarations, in order, from the .pxd."""
    fields, current = {}, None
    for line in _pxd_text().splitlines():
        line = line.rstrip()
        match = re.match(r"cdef class (\w+)", line)
        if match:
            current = fields.setdefault(match.group(1), [])
        elif current is not None and line.startswith("    cdef "):
            current.append(" ".join(line.split()[1:]))
        elif line and not line.startswith(" "):
            current = None
    return fields


def _declared_functions():
    """The module-level function declarations of the .pxd (exception
    specifications and nogil are not in the exported signatures)."""
    text = _pxd_text()
    return sorted(" ".join(match.split())
                  for match in re.findall(r"^cdef (?!class|enum)[^\n]*\([^)]*\)[^\n]*", text, re.M))


def current_api():
    return {
        "version": interface.CAPI_VERSION,
        "declarations": _declared_functions(),
        "functions": {name: _get_name(capsule).decode()
                      for name, capsule in sorted(interface.__pyx_capi__.items())},
        "classes": {name: {"fields": fields,
                           "basicsize": getattr(interface, name).__basicsize__}
                    for name, fields in sorted(_declared_fields().items())},
    }


def test_public_c_api_matches_its_snapshot():
    with open(SNAPSHOT) as f:
        snapshot = json.load(f)
    current = current_api()
    if current == snapshot:
        return
    changed = sorted(key for key in ("declarations", "functions", "classes")
                     if current[key] != snapshot[key])
    if current["version"] == snapshot["version"]:
        raise AssertionError(
            f"the public C API ({', '.join(changed)}) changed but "
            f"AOTI_CY_CAPI_VERSION is still {current['version']}: already-built "
            f"consumers would break. Bump it in aoti_cy/interface.pxd, rebuild, "
            f"and run `python tests/test_capi.py --update`")
    raise AssertionError("AOTI_CY_CAPI_VERSION changed: refresh the snapshot with "
                         "`python tests/test_capi.py --update`")


def test_the_api_is_functions_and_no_methods():
    # Consumers must not reach anything through a vtable: a cdef method
    # would be called by position in it.
    text = _pxd_text()
    assert not re.search(r"^    cdef [^=\n]*\(", text, re.M), "cdef method in interface.pxd"
    assert {"run_handles", "capi_version", "handle_from_tensor", "tensor_from_handle",
            "new_handle_ref", "free_handles"} <= set(interface.__pyx_capi__)
    assert aoti_cy.interface.CAPI_VERSION >= 2


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    with open(SNAPSHOT, "w") as f:
        json.dump(current_api(), f, indent=2)
        f.write("\n")
    print("wrote", SNAPSHOT)
