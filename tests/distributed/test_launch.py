"""Launch env-var parsing, the torchrun command, worker arguments, strategy checks, and the training
sampler sharded per rank the way the Trainer (accelerate) shards it."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from mmtune.errors import MmtuneError
from mmtune.train import launch, logs
from mmtune.train.launch import LaunchPlan, plan_from_env, torchrun_args


def test_no_launch_without_nproc_or_inside_a_worker():
    assert plan_from_env({}) is None
    assert plan_from_env({"NPROC_PER_NODE": "1"}) is None  # one process: just run
    assert plan_from_env({"NPROC_PER_NODE": "4", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}) is None  # already launched


def test_single_node_launch_uses_a_free_port():
    plan = plan_from_env({"NPROC_PER_NODE": "2"})
    assert plan == LaunchPlan(2)
    assert torchrun_args(plan) == ["--standalone", "--nproc_per_node=2"]


def test_multi_node_launch_passes_the_rendezvous():
    env = {"NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501"}
    plan = plan_from_env(env)
    assert plan == LaunchPlan(8, 2, 1, "10.0.0.1", 29501) and plan.world_size == 16
    assert torchrun_args(plan) == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1",
                                   "--master_addr=10.0.0.1", "--master_port=29501"]
    # one node with an explicit port: static rendezvous on localhost
    assert torchrun_args(plan_from_env({"NPROC_PER_NODE": "2", "MASTER_PORT": "29600"}))[-1] == "--master_port=29600"


@pytest.mark.parametrize("env,message", [
    ({"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE='two' is not a whole number"),
    ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE=0 must be at least 1"),
    ({"NPROC_PER_NODE": "8", "NNODES": "2"}, "needs MASTER_ADDR"),
    ({"NNODES": "2", "MASTER_ADDR": "h"}, "NPROC_PER_NODE is not"),
    ({"NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK=2 must be below NNODES=2"),
    ({"NPROC_PER_NODE": "2", "MASTER_PORT": "70000"}, "not a TCP port"),
])
def test_bad_launch_variables_are_one_line_errors(env, message):
    with pytest.raises(MmtuneError, match=message):
        plan_from_env(env)


def test_launch_command_reruns_mmtune_under_torchrun():
    cmd = launch.launch_command(LaunchPlan(2), ["train", "r.yaml", "--work-dir", "w"])
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "mmtune", "train", "r.yaml", "--work-dir", "w"]


def test_worker_args_repeat_the_train_command():
    from mmtune.cli.main import build_parser
    from mmtune.cli.train import worker_args

    args = build_parser().parse_args(["train", "r.yaml", "--deepspeed", "zero3", "--resume", "auto",
                                      "--set", "train.lr=1e-4", "--set", "data.max_length=64"])
    assert worker_args(args, "work") == ["train", "r.yaml", "--work-dir", "work", "--resume", "auto",
                                         "--deepspeed", "zero3", "--set", "train.lr=1e-4", "--set", "data.max_length=64"]
    args = build_parser().parse_args(["train", "r.yaml", "--fsdp", "full_shard", "--fsdp-offload"])
    assert worker_args(args, "w")[-3:] == ["--fsdp", "full_shard", "--fsdp-offload"]


def test_strategy_checks():
    from mmtune.config.strategy import DEEPSPEED_CONFIGS, Strategy

    zero3, zero2 = str(DEEPSPEED_CONFIGS / "zero3.json"), str(DEEPSPEED_CONFIGS / "zero2.json")
    assert Strategy().describe(1) == "1 process(es), single process"
    assert Strategy().describe(2) == "2 process(es), data parallel (DDP)"
    assert "DeepSpeed ZeRO-3" in Strategy(zero3).describe(1)
    assert "FSDP full_shard + CPU offload" in Strategy(fsdp="full_shard", fsdp_offload=True).describe(1)
    assert Strategy(zero3).params_sharded and Strategy(fsdp="shard_grad_op").params_sharded
    assert not Strategy(zero2).params_sharded and not Strategy().params_sharded
    with pytest.raises(MmtuneError, match="pick one"):
        Strategy(zero3, "full_shard").check("lora")
    with pytest.raises(MmtuneError, match="QLoRA cannot shard"):
        Strategy(zero3).check("qlora")
    with pytest.raises(MmtuneError, match="QLoRA cannot shard"):
        Strategy(fsdp="shard_grad_op").check("qlora")
    Strategy(zero2).check("qlora")
    with pytest.raises(MmtuneError, match="--fsdp-offload needs --fsdp"):
        Strategy(fsdp_offload=True).check("lora")
    with pytest.raises(MmtuneError, match="unknown --fsdp mode"):
        Strategy(fsdp="hybrid_shard").check("lora")
    with pytest.raises(MmtuneError, match="--fsdp needs CUDA GPUs"):
        Strategy(fsdp="full_shard").check("lora", device="cpu")


def test_fsdp_arguments_are_accepted_by_training_arguments(tmp_path):
    from transformers import TrainingArguments

    from mmtune.config.strategy import Strategy

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                             **Strategy(fsdp="shard_grad_op", fsdp_offload=True).training_arguments())
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is False and plugin["cpu_offload"]
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and "transformer_cls_names_to_wrap" not in plugin
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"


def test_epoch_sampler_gives_each_rank_different_rows():
    """The Trainer hands our sampler to accelerate, which shards its batches across ranks: with the
    same (seed, epoch) permutation on every rank, rank r takes batches r, r+N, ... — disjoint rows,
    and together exactly the single-process batches of N x the micro-batch."""
    from accelerate.data_loader import prepare_data_loader

    from mmtune.train.trainer import EpochShuffleSampler

    data = list(range(24))

    def batches(rank, world, micro, epoch=1):
        loader = torch.utils.data.DataLoader(data, batch_size=micro, sampler=EpochShuffleSampler(len(data), seed=3))
        if world > 1:
            loader = prepare_data_loader(loader, num_processes=world, process_index=rank, put_on_device=False)
            loader.set_epoch(epoch)
        else:
            loader.sampler.set_epoch(epoch)
        return [b.tolist() for b in loader]

    single = batches(0, 1, 4)
    rank0, rank1 = batches(0, 2, 2), batches(1, 2, 2)
    assert not set(sum(rank0, [])) & set(sum(rank1, []))
    assert [a + b for a, b in zip(rank0, rank1)] == single
    assert single != [list(range(i, i + 4)) for i in range(0, 24, 4)]  # shuffled, anew each epoch
    assert batches(0, 2, 2, epoch=2) != rank0


def test_other_ranks_log_warnings_only(monkeypatch):
    import logging

    logger = logging.getLogger("mmtune-test-rank")
    monkeypatch.setenv("RANK", "1")
    assert logs.quiet_other_ranks(logger) and logger.level == logging.WARNING
    monkeypatch.setenv("RANK", "0")
    assert not logs.quiet_other_ranks(logging.getLogger("mmtune-test-rank0"))
