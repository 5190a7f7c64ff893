"""The build records its torch and refuses to import under another one."""

import subprocess
import sys

import torch

import aoti_cy


def test_build_records_the_running_torch():
    assert aoti_cy.BUILT_FOR_TORCH == torch.__version__


def test_import_under_another_torch_says_how_to_rebuild():
    script = (
        "import sys, types\n"
        "sys.modules['aoti_cy._build_info'] = types.SimpleNamespace(TORCH_VERSION='1.0.0')\n"
        "try:\n"
        "    import aoti_cy\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    print('imported')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "built for torch 1.0.0" in done.stdout
    assert torch.__version__ in done.stdout
    assert "--no-build-isolation" in done.stdout
