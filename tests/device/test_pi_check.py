"""bench/pi_check.sh, the emulated Raspberry Pi check: its refusals, and that it installs what the README says.

The check itself (debootstrap, qemu, ~20 minutes) runs by hand or with DR_PI_CHECK=1 in .ci/run; these tests
only guard what can silently drift: the bad-input refusals and the install line it shares with the README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "pi_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(**env):
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_an_unknown_cpu_is_refused_with_the_choices():
    out = _run(DR_PI_CPU="cortex-a53")
    assert out.returncode == 2
    assert "cortex-a72 (Pi 4) or cortex-a76 (Pi 5)" in out.stderr and "cortex-a53" in out.stderr


def test_a_cache_inside_the_repository_is_refused_before_anything_is_built(tmp_path):
    cache = REPO / "pi-cache-test"
    out = _run(DR_PI_CACHE=str(cache))
    assert out.returncode == 2
    # as root it reaches the cache check; as another user it stops at the root check first; it never builds
    assert ("inside the repository" in out.stderr) or ("needs root" in out.stderr)
    assert not cache.exists()


def test_it_installs_the_unit_with_the_readme_pins():
    readme = (REPO / "README.md").read_text()
    script = SCRIPT.read_text()
    pi_section = readme[readme.index("**On the unit (Raspberry Pi OS Bookworm, 64-bit):**"):]
    readme_pins = set(re.findall(r"numpy<2|opencv-python-headless==[0-9.*]+", pi_section.split("```")[1]))
    assert readme_pins == {"numpy<2", "opencv-python-headless==4.11.*"}
    for pin in readme_pins:
        assert f"'{pin}'" in script, f"pi_check.sh does not install {pin} as the README tells a Pi user"
    assert "--system-site-packages" in script and "-e '.[unit,serial]'" in script
