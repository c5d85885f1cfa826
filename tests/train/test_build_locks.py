"""A build lock left by a killed torch-extension build is removed before DeepSpeed waits on it."""

import logging
import os
import time

from mmtune.train.build_locks import build_locks, clear_stale_build_locks, extensions_root


def _lock(path, age_s):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_old_locks_go_and_young_ones_stay_with_a_warning(tmp_path, caplog):
    old = _lock(tmp_path / "py311_cpu" / "cpu_adam" / "lock", 3600)  # default layout
    flat = _lock(tmp_path / "shm_comm" / "lock", 900)  # TORCH_EXTENSIONS_DIR layout
    young = _lock(tmp_path / "py311_cpu" / "fused_adam" / "lock", 5)
    (tmp_path / "py311_cpu" / "cpu_adam" / "cpu_adam.so").touch()
    assert build_locks(tmp_path) == sorted([old, flat, young])
    with caplog.at_level(logging.WARNING, logger="mmtune.train"):
        removed = clear_stale_build_locks(tmp_path, stale_after_s=600)
    assert sorted(removed) == sorted([old, flat])
    assert not old.exists() and not flat.exists() and young.exists()
    assert (tmp_path / "py311_cpu" / "cpu_adam" / "cpu_adam.so").exists()  # only the lock is touched
    text = caplog.text
    assert str(old) in text and "killed" in text
    assert str(young) in text and "delete that file" in text


def test_no_extensions_folder_is_nothing_to_do(tmp_path):
    assert clear_stale_build_locks(tmp_path / "absent") == []


def test_root_follows_torch_extensions_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_root() == tmp_path
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert extensions_root().name == "torch_extensions"
