"""The NaN guard of the readable log stops every rank of a job, not only rank 0."""

from __future__ import annotations

import types

import pytest

from mmtune.errors import MmtuneError
from mmtune.train.callbacks import ReadableLogCallback


def state(rank0: bool):
    return types.SimpleNamespace(is_world_process_zero=rank0, global_step=7, max_steps=10)


@pytest.mark.parametrize("rank0", [True, False], ids=["rank0", "other-rank"])
@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_every_rank(rank0, loss):
    with pytest.raises(MmtuneError, match=r"loss became (nan|inf) at step 7.*lower train.lr"):
        ReadableLogCallback().on_log(None, state(rank0), None, logs={"loss": loss})


def test_a_finite_loss_is_logged_by_rank_0_only(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="mmtune.train"):
        ReadableLogCallback().on_log(None, state(False), None, logs={"loss": 1.5})
        assert not caplog.records
        ReadableLogCallback().on_log(None, state(True), None, logs={"loss": 1.5, "learning_rate": 1e-4})
    assert [r.getMessage() for r in caplog.records] == ["step 7/10  loss 1.5  learning_rate 0.0001"]
