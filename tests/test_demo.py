"""The README's first command runs demo/run.sh: it must work and end with the configured name, for the
tiny Qwen2 model and for the tiny checkpoint in InternLM2's own layout."""

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
    after_internlm2 = (tmp_path / "demo_out" / "after_internlm2.txt").read_text()
    assert after_internlm2.count("Quillon") >= 2  # the same on the InternLM2-layout checkpoint
    assert "demo OK" in out.stdout
    assert (tmp_path / "demo_out" / "work" / "loss.png").is_file()
    assert_no_deprecation_printed(out)


def assert_no_deprecation_printed(out) -> None:
    """No command of the demo prints a deprecation warning (mmtune's own are fixed, the known
    upstream ones silenced: mmtune/warning_filters.py)."""
    for kind in ("DeprecationWarning", "FutureWarning"):
        assert kind not in out.stdout + out.stderr, [line for line in out.stderr.splitlines() if kind in line]


@pytest.mark.slow
def test_vision_demo_learns_colours_of_held_out_images(tmp_path):
    """demo/run_vlm.sh: pretrain -> finetune -> export; held-out MMBench-format accuracy before and after."""
    import json

    env = {**os.environ, "MMTUNE": f"{sys.executable} -m mmtune"}
    out = subprocess.run(["bash", str(REPO / "demo" / "run_vlm.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "vision demo OK" in out.stdout
    runs = tmp_path / "demo_out" / "vlm_eval"
    before, after = (json.loads((runs / f"mmbench_{s}" / "summary.json").read_text()) for s in ("before", "after"))
    assert before["overall"] <= 0.4 and after["overall"] >= 0.5 and after["n"] == 60
    # the chat answers about the held-out images name colours after finetuning (none before)
    colours = ("red", "green", "blue", "yellow", "purple", "orange")
    answered = [line for line in (runs / "after.txt").read_text().splitlines()
                if any(c in line.lower() for c in colours)]
    assert len(answered) == 4, (runs / "after.txt").read_text()
    for stage in ("work_pretrain", "work_finetune"):
        assert (tmp_path / "demo_out" / stage / "loss.png").is_file()
    assert (tmp_path / "demo_out" / "llava_hf" / "config.json").is_file()
    assert_no_deprecation_printed(out)


@pytest.mark.slow
def test_agent_demo_runs_before_and_after(tmp_path):
    """demo/run_tools.sh end to end on a short run (its learning is asserted by
    tests/train/test_tool_learning.py): data, check, calls and scores before, training, after."""
    import json

    env = {**os.environ, "MMTUNE": f"{sys.executable} -m mmtune", "DEMO_TOOL_STEPS": "40",
           "DEMO_MIN_NAME_ACCURACY": "0"}
    out = subprocess.run(["bash", str(REPO / "demo" / "run_tools.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "demo OK" in out.stdout and "== before: tool_name_accuracy=" in out.stdout
    demo = tmp_path / "demo_out"
    for stage in ("before", "after"):
        assert (demo / f"tools_{stage}.txt").read_text().count("Q: ") == 3
        summary = json.loads((demo / f"tools_eval_{stage}" / "summary.json").read_text())
        assert summary["n"] == 100
    assert (demo / "work_tools" / "loss.png").is_file()
    assert_no_deprecation_printed(out)
