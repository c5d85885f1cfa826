"""Session-wide test setup: a persistent cache for the tiny models, few CPU threads, the deprecation
policy (mmtune's own deprecated calls are errors, known upstream ones are silenced), shared fixtures.

`MMTUNE_CACHE` is set at import time, before any test module builds a tiny model, so the tiny
tokenizer and models are built once per machine (in ~/.cache/mmtune-tests unless the caller set
MMTUNE_CACHE) and reused by every later run.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MMTUNE_CACHE", str(Path.home() / ".cache" / "mmtune-tests"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


def pytest_configure(config):
    from mmtune import warning_filters
    from mmtune.testing import deprecations

    for line in (*warning_filters.pytest_filter_lines(), *deprecations.pytest_filter_lines()):
        config.addinivalue_line("filterwarnings", line)
    deprecations.install()


@pytest.fixture(scope="session")
def tiny_tokenizer_path() -> Path:
    from mmtune.testing.tiny import tiny_tokenizer_dir

    return tiny_tokenizer_dir()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path):
    """The tiny byte-level BPE tokenizer (every named template's special tokens are single tokens).

    Session-scoped: tests must not change it (copy.deepcopy it first)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_path)


@pytest.fixture(scope="session")
def tiny_qwen2_dir() -> Path:
    from mmtune.testing.tiny import tiny_lm_dir

    return tiny_lm_dir("qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir() -> Path:
    from mmtune.testing.tiny import tiny_lm_dir

    return tiny_lm_dir("llama")


@pytest.fixture
def isolated_dataset_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, per-test tokenized-dataset cache; the tiny models stay in the shared cache."""
    import mmtune.data.dataset as dataset

    root = tmp_path / "dataset-cache"
    monkeypatch.setattr(dataset, "dataset_cache_root", lambda: root)
    return root
