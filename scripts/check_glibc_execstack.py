"""Load models under glibc 2.41, which refuses executable stacks at dlopen.

glibc 2.41 (Debian 13, Ubuntu 25.04, Fedora 42) no longer makes the stack
executable when dlopen meets a library that asks for it: the dlopen fails
("cannot enable executable stack as shared object requires"). Every model
library torch 2.13 links asks for it. This script shows, on a machine with
an older glibc, what happens there: it runs Python, torch and aoti_cy under
the dynamic loader and libc of Debian 13's ``libc6`` package
(``ld-linux-x86-64.so.2 --library-path <its lib folder> python ...``).

Usage (x86-64 Debian or Ubuntu, from the repository root, aoti_cy built):

    python scripts/check_glibc_execstack.py [--glibc DIR]

``--glibc DIR`` names a folder holding Debian 13's unpacked ``libc6``
(``DIR/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2``). Without it the
package is fetched with ``apt-get download libc6`` through a private apt
configuration (the system's own Debian sources, suite ``trixie``; nothing of
the system's apt state changes) into a temporary folder.

Each check runs in its own process and prints one line; the script exits
non-zero when any check does not go as expected.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_DIR = os.path.join("usr", "lib", "x86_64-linux-gnu")
SUITE = "trixie"

PRELUDE = """
import ctypes, os, sys, torch
import aoti_cy
from aoti_cy.testing import EXAMPLES

def stack():
    (line,) = [l for l in open("/proc/self/maps") if l.rstrip().endswith("[stack]")]
    return line.split()[1]

version = ctypes.CDLL(None).gnu_get_libc_version
version.restype = ctypes.c_char_p
inputs = EXAMPLES["mlp"].inputs()
with torch.no_grad():
    want = EXAMPLES["mlp"].eager()(*inputs)
"""

CHECKS = [
    ("torch's own loader, RWE package", "fails", """
        model = torch._inductor.aoti_load_package(PACKAGE)
        torch.testing.assert_close(model(*inputs), want)
    """, {}),
    ("aoti_cy.load, RWE package", "loads", """
        model = aoti_cy.load(PACKAGE)
        torch.testing.assert_close(model.run(inputs)[0], want)
    """, {}),
    ("aoti_cy.load, RWE bare .so", "loads", """
        model = aoti_cy.load(LIBRARY)
        torch.testing.assert_close(model.run(inputs)[0], want)
    """, {}),
    ("aoti_cy.Model, RWE package", "loads", """
        model = aoti_cy.Model(PACKAGE)
        torch.testing.assert_close(model.run(inputs)[0], want)
    """, {}),
    ("aoti_cy.load(allow_executable_stack=True)", "fails", """
        model = aoti_cy.load(PACKAGE, allow_executable_stack=True)
    """, {}),
    ("allow_executable_stack=True, GLIBC_TUNABLES=glibc.rtld.execstack=2", "loads", """
        model = aoti_cy.load(PACKAGE, allow_executable_stack=True)
        torch.testing.assert_close(model.run(inputs)[0], want)
    """, {"GLIBC_TUNABLES": "glibc.rtld.execstack=2"}),
]


def fetch_libc6(into):
    """Unpack Debian 13's libc6 into ``into``, fetched with apt-get through a
    private configuration made from the system's own Debian sources."""
    sources = _system_debian_uris()
    if not sources:
        sys.exit("no Debian sources found in /etc/apt; pass --glibc DIR instead")
    state = os.path.join(into, "apt")
    for sub in ("lists/partial", "cache/archives/partial", "etc"):
        os.makedirs(os.path.join(state, sub), exist_ok=True)
    with open(os.path.join(state, "etc", f"{SUITE}.sources"), "w") as f:
        f.write(f"Types: deb\nURIs: {sources[0]}\nSuites: {SUITE}\nComponents: main\n"
                f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    open(os.path.join(state, "etc", "none.list"), "w").close()
    options = ["-o", "APT::Sandbox::User=root"]   # the private folder is ours alone
    for key, value in (("Dir::Etc::sourcelist", "etc/none.list"),
                       ("Dir::Etc::sourceparts", "etc"), ("Dir::State::Lists", "lists"),
                       ("Dir::Cache", "cache")):
        options += ["-o", f"{key}={os.path.join(state, value)}"]
    subprocess.run(["apt-get", *options, "-q", "update"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", *options, "-q", "download", "libc6"], check=True, cwd=into,
                   stdout=subprocess.DEVNULL)
    (deb,) = glob.glob(os.path.join(into, "libc6_*.deb"))
    subprocess.run(["dpkg-deb", "-x", deb, into], check=True)
    return into


def _system_debian_uris():
    uris = []
    for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
        with open(path) as f:
            text = f.read()
        for stanza in text.split("\n\n"):
            if re.search(r"^Suites:.*\b(bookworm|trixie|sid)\b", stanza, re.M) and \
                    "security" not in stanza:
                uris += re.findall(r"^URIs:\s*(\S+)", stanza, re.M)
    return uris


def run_check(loader, lib_dir, body, env_extra, values):
    script = (PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in values.items())
              + "print('glibc', version().decode(), 'stack before', stack())\n"
              + textwrap.dedent(body)
              + "print('stack after', stack())\n")
    env = dict(os.environ, PYTHONPATH=ROOT, **env_extra)
    return subprocess.run([loader, "--library-path", lib_dir, sys.executable, "-c", script],
                          capture_output=True, text=True, env=env, timeout=600)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glibc", help="folder holding Debian 13's unpacked libc6")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from aoti_cy import _elf
    from aoti_cy.testing import EXAMPLES
    with tempfile.TemporaryDirectory(prefix="glibc-execstack-") as work:
        glibc = args.glibc or fetch_libc6(os.path.join(work, "libc6"))
        lib_dir = os.path.join(glibc, LIB_DIR)
        loader = os.path.join(lib_dir, "ld-linux-x86-64.so.2")
        package = EXAMPLES["mlp"].package("cpu")
        import zipfile
        with zipfile.ZipFile(package) as archive:
            archive.extractall(os.path.join(work, "unpacked"))
        (library,) = glob.glob(os.path.join(work, "unpacked", "**", "*.wrapper.so"),
                               recursive=True)
        print(f"model library: PT_GNU_STACK {_elf.stack_text(_elf.stack_flags(library))}")
        failures = 0
        for label, expected, body, env_extra in CHECKS:
            done = run_check(loader, lib_dir, body, env_extra,
                             {"PACKAGE": package, "LIBRARY": library})
            lines = (done.stdout + done.stderr).strip().splitlines()
            glibc_line = next((line for line in lines if line.startswith("glibc")), "?")
            outcome = "loads" if done.returncode == 0 else "fails"
            detail = (next((line for line in lines if line.startswith("stack after")), "")
                      if outcome == "loads" else lines[-1] if lines else "")
            verdict = "as expected" if outcome == expected else "UNEXPECTED"
            failures += outcome != expected
            print(f"[{verdict}] {label}: {outcome} ({glibc_line}; {detail})")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
