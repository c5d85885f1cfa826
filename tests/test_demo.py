"""The README's first command runs demo/run.sh: it must work and end with the configured name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_script_teaches_the_name(tmp_path):
    env = {**os.environ, "MMTUNE": f"{sys.executable} -m mmtune", "DEMO_NAME": "Quillon"}
    out = subprocess.run(["bash", str(REPO / "demo" / "run.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    before = (tmp_path / "demo_out" / "before.txt").read_text()
    after = (tmp_path / "demo_out" / "after.txt").read_text()
    assert "Quillon" not in before
    assert after.count("Quillon") >= 2  # both the English and the Chinese answer
    assert "demo OK" in out.stdout
    assert (tmp_path / "demo_out" / "work" / "loss.png").is_file()
