"""Private signing keys never enter the repository (docs/model_updates.md, "Keys"): no tracked file holds one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A PEM private key block with its base64 body (a test that only names the header does not match).
PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40,}")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_no_tracked_file_holds_a_private_key():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    offenders = [name.decode() for name in files if name and (REPO / name.decode()).is_file()
                 and PEM_KEY.search((REPO / name.decode()).read_bytes())]
    assert not offenders, f"private keys in the repository: {offenders}"
