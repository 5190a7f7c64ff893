"""Reading a model library's ELF headers and symbol table, before and after
dlopen: what the dynamic loader would not tell us.

- ``check_elf`` refuses, before dlopen maps it, a file that would crash the
  process later (not ELF, another architecture, truncated).
- ``input_check_offsets`` finds the input-check functions inductor generates
  in every model (``check_input_<i>``). They are local (static) functions, so
  dlsym cannot see them; the symbol table (``.symtab``) of an unstripped
  library lists them.
- ``stack_flags`` and ``clear_executable_stack`` read and clear the
  executable bit of the ``PT_GNU_STACK`` program header: a library whose
  header asks for an executable stack makes dlopen turn the stack of every
  thread of the process executable (glibc < 2.41) or refuse it (2.41+).
"""

import os
import platform
import re
import struct

import numpy

from aoti_cy.errors import PackageError

_ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "ppc64le": 21, "s390x": 22}

_PT_LOAD = 1
_PT_GNU_STACK = 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
_SHT_SYMTAB = 2
_STT_FUNC = 2
_SYMBOL = numpy.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"),
                       ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")])

# `static void check_input_<i>(AtenTensorHandle*)`, in any namespace: the
# mangled parameter list pins the signature we call it with.
_INPUT_CHECK = re.compile(rb"L(\d+)check_input_(\d+)E?PP16AtenTensorOpaque\x00")


def _header(f, path):
    header = f.read(64)
    if len(header) < 64 or header[:4] != b"\x7fELF":
        raise PackageError(f"{path} is not an ELF shared library")
    if header[4] != 2 or header[5] != 1:
        raise PackageError(f"{path} is not a 64-bit little-endian ELF library")
    return header


def check_elf(path):
    """Refuse, before dlopen maps it, a file that is not a 64-bit ELF shared
    library for this machine or that is shorter than its own headers say (a
    truncated library maps pages past the end of the file, and touching them
    kills the process with SIGBUS)."""
    with open(path, "rb") as f:
        header = _header(f, path)
        size = os.fstat(f.fileno()).st_size
        machine, = struct.unpack_from("<H", header, 18)
        expected = _ELF_MACHINES.get(platform.machine())
        if expected is not None and machine != expected:
            raise PackageError(
                f"{path} is built for another architecture (ELF machine {machine}, "
                f"this is {platform.machine()})")
        phoff, shoff = struct.unpack_from("<QQ", header, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", header, 54)
        needed = shoff + shentsize * shnum
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        if len(table) < phentsize * phnum:
            raise PackageError(f"{path} is truncated ({size} bytes)")
        for i in range(phnum):
            kind, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if kind == _PT_LOAD:
                needed = max(needed, offset + filesz)
    if size < needed:
        raise PackageError(f"{path} is truncated: {size} bytes, its headers need {needed}")


def _sections(f, header):
    shoff, = struct.unpack_from("<Q", header, 40)
    shentsize, shnum = struct.unpack_from("<HH", header, 58)
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    # (type, offset, size, link) per section
    return [struct.unpack_from("<4xI16xQQI", table, i * shentsize) for i in range(shnum)]


def _read(f, offset, size):
    f.seek(offset)
    return f.read(size)


def input_check_offsets(path, num_inputs):
    """``{i: offset}``: where ``check_input_<i>`` lies in the library,
    relative to its load base, for each input that has one. Empty for a
    stripped library or one whose torch generates no such functions."""
    try:
        return _input_check_offsets(path, num_inputs)
    except (ValueError, struct.error) as e:   # section headers that lie
        raise PackageError(f"{path} has a malformed symbol table: {e}") from None


def _input_check_offsets(path, num_inputs):
    with open(path, "rb") as f:
        sections = _sections(f, _header(f, path))
        symtabs = [s for s in sections if s[0] == _SHT_SYMTAB]
        if not symtabs:
            return {}
        _, offset, size, link = symtabs[0]
        if link >= len(sections):
            return {}
        symbols = numpy.frombuffer(_read(f, offset, size - size % _SYMBOL.itemsize),
                                   dtype=_SYMBOL)
        strings = _read(f, sections[link][1], sections[link][2])
    wanted = {}   # string-table offset -> input index
    for match in _INPUT_CHECK.finditer(strings):
        length, index = int(match.group(1)), int(match.group(2))
        start = strings.rfind(b"\x00", 0, match.start()) + 1
        if (strings.startswith(b"_Z", start) and index < num_inputs
                and length == len(f"check_input_{index}")):
            wanted[start] = index
    if not wanted:
        return {}
    hits = symbols[numpy.isin(symbols["name"], list(wanted))
                   & ((symbols["info"] & 0xF) == _STT_FUNC)
                   & (symbols["shndx"] != 0) & (symbols["value"] != 0)]
    return {wanted[int(s["name"])]: int(s["value"]) for s in hits}


def _stack_header_offset(f, path):
    """(file offset of the PT_GNU_STACK header's p_flags, its flags), or
    (None, None) when the library has no such header."""
    header = _header(f, path)
    phoff, = struct.unpack_from("<Q", header, 32)
    phentsize, phnum = struct.unpack_from("<HH", header, 54)
    if phentsize < 8:
        raise PackageError(f"{path} has malformed program headers (entry size {phentsize})")
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    if len(table) < phentsize * phnum:
        raise PackageError(f"{path} is truncated: its program headers end past the file")
    for i in range(phnum):
        kind, flags = struct.unpack_from("<II", table, i * phentsize)
        if kind == _PT_GNU_STACK:
            return phoff + i * phentsize + 4, flags
    return None, None


def stack_flags(path):
    """The ``p_flags`` of the library's ``PT_GNU_STACK`` program header
    (``PF_R | PF_W | PF_X`` asks for an executable stack), or None when it
    has none (glibc then assumes an executable stack on x86-64)."""
    with open(path, "rb") as f:
        return _stack_header_offset(f, path)[1]


def stack_text(flags):
    """``flags`` as readelf shows them ("RW", "RWE"), "none" for None."""
    if flags is None:
        return "none"
    return "".join(letter for bit, letter in ((PF_R, "R"), (PF_W, "W"), (PF_X, "E"))
                   if flags & bit)


def asks_for_executable_stack(flags):
    """Whether a library with these PT_GNU_STACK flags makes dlopen want an
    executable stack (a missing header does too, on x86-64 and aarch64)."""
    return flags is None or bool(flags & PF_X)


def clear_executable_stack(path):
    """Clear ``PF_X`` in the ``PT_GNU_STACK`` header of the library at
    ``path``, in place: only that header's 4-byte ``p_flags`` field is
    rewritten. Returns whether the file changed. A library without the
    header cannot be fixed this way: PackageError."""
    with open(path, "r+b") as f:
        offset, flags = _stack_header_offset(f, path)
        if offset is None:
            raise PackageError(
                f"{path} has no PT_GNU_STACK program header, so the dynamic loader "
                f"assumes it needs an executable stack; relink it (e.g. with "
                f"-Wl,-z,noexecstack) to load it with a non-executable stack")
        if not flags & PF_X:
            return False
        f.seek(offset)
        f.write(struct.pack("<I", flags & ~PF_X))
    return True
