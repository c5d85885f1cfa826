"""Training starts by handing the C heap's free pages back to the OS (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

from mmtune.train.host_memory import release_free_heap

glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "malloc_trim")


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc's")
def test_free_heap_pages_go_back_to_the_os():
    # 300 MiB of 64 KiB blocks (below malloc's mmap threshold: heap, not mmap); keeping every 16th
    # alive stops the heap's top from shrinking by itself, so the freed ones stay resident
    blocks = [np.ones(64 * 1024 - 256, dtype=np.uint8) for _ in range(4800)]
    keep = blocks[::16]
    del blocks
    before = resident_mib()
    assert release_free_heap()
    after = resident_mib()
    assert before - after > 150, (before, after)
    assert sum(int(b[0]) for b in keep) == len(keep)


def test_a_training_run_releases_once_before_the_first_step(monkeypatch, tiny_qwen2_dir, tmp_path):
    from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
    from mmtune.train.run import run_training

    calls = []
    monkeypatch.setattr("mmtune.train.host_memory.release_free_heap", lambda: calls.append(1) or True)
    recipe = self_cognition_recipe(tiny_qwen2_dir, write_self_cognition(tmp_path / "self.jsonl"),
                                   train={"max_steps": 2, "save_steps": 0}, eval={"evaluation_inputs": []})
    run_training(recipe, tmp_path / "work")
    assert calls == [1]
