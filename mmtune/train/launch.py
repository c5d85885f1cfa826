"""Multi-process training: start torchrun, and the few things a worker does differently.

`NPROC_PER_NODE=N [NNODES=M NODE_RANK=R MASTER_ADDR=A MASTER_PORT=P] mmtune train CONFIG` re-runs
the same command under `python -m torch.distributed.run` (XTuner's convention); plain
`torchrun --nproc_per_node N -m mmtune train CONFIG` works as well. Inside a worker:

- data is tokenized once: every rank takes a file lock on the dataset cache entry before
  `encode_datasets`; the first holder encodes and caches, the others then load the cache.
  Waiting on a file lock is no collective, so a long tokenization cannot hit the process group's
  timeout (`ddp_timeout`, 30 min by default);
- only global rank 0 writes the log file and logs at INFO (other ranks log warnings, prefixed);
- under ZeRO-3 / FSDP every forward pass gathers parameters from all ranks, so the sample-chat
  callback generates on every rank (`synced_gpus`) and rank 0 alone writes the answers.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from mmtune.errors import MmtuneError

log = logging.getLogger("mmtune.train")


# ---- the launcher -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPlan:
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def in_worker(env=None) -> bool:
    """True inside a process started by torchrun (or any launcher that sets the torch env vars)."""
    env = os.environ if env is None else env
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env


def _int_var(env, name: str, default: int | None, minimum: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MmtuneError(f"{name}={raw!r} is not a whole number", hint=f"e.g. {name}={max(minimum, 1)}") from None
    if value < minimum:
        raise MmtuneError(f"{name}={value} must be at least {minimum}")
    return value


def plan_from_env(env=None) -> LaunchPlan | None:
    """The torchrun launch the environment asks for, or None for a plain single-process run.

    None as well inside a torchrun worker (the launch already happened) and for NPROC_PER_NODE=1
    on one node."""
    env = os.environ if env is None else env
    if in_worker(env):
        return None
    nproc = _int_var(env, "NPROC_PER_NODE", None, 1)
    nnodes = _int_var(env, "NNODES", 1, 1)
    if nproc is None:
        if nnodes > 1:
            raise MmtuneError(f"NNODES={nnodes} is set but NPROC_PER_NODE is not", hint="set NPROC_PER_NODE (processes per node)")
        return None
    node_rank = _int_var(env, "NODE_RANK", 0, 0)
    if node_rank >= nnodes:
        raise MmtuneError(f"NODE_RANK={node_rank} must be below NNODES={nnodes}")
    port = _int_var(env, "MASTER_PORT", None, 1)
    if port is not None and port > 65535:
        raise MmtuneError(f"MASTER_PORT={port} is not a TCP port (1-65535)")
    addr = env.get("MASTER_ADDR", "").strip() or None
    if nnodes > 1 and not addr:
        raise MmtuneError(f"NNODES={nnodes} needs MASTER_ADDR (the address of the node with NODE_RANK=0)")
    if nproc == 1 and nnodes == 1:
        return None
    return LaunchPlan(nproc, nnodes, node_rank, addr, port)


def torchrun_args(plan: LaunchPlan) -> list[str]:
    """torchrun's options for the plan. One node without MASTER_PORT uses `--standalone` (a free
    local port, so two jobs on one machine do not collide); otherwise a static rendezvous."""
    args = [f"--nproc_per_node={plan.nproc_per_node}"]
    if plan.nnodes == 1 and plan.master_port is None and plan.master_addr is None:
        return ["--standalone", *args]
    args += [f"--nnodes={plan.nnodes}", f"--node_rank={plan.node_rank}",
             f"--master_addr={plan.master_addr or '127.0.0.1'}", f"--master_port={plan.master_port or 29500}"]
    return args


def launch_command(plan: LaunchPlan, mmtune_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(plan), "-m", "mmtune", *mmtune_args]


def launch(plan: LaunchPlan, mmtune_args: list[str]) -> int:
    """Run `mmtune <mmtune_args>` in plan.nproc_per_node workers on this node; their exit status."""
    command = launch_command(plan, mmtune_args)
    print("mmtune: launching " + " ".join(command[1:]), file=sys.stderr, flush=True)
    return subprocess.call(command)


# ---- inside a worker ------------------------------------------------------------------------------


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return rank() == 0


def bind_local_device(device: str) -> str:
    """Make plain "cuda" mean this worker's GPU (cuda:LOCAL_RANK) before any weight is loaded, so N
    workers do not all load onto GPU 0 (and 4-bit models, which cannot move, land right)."""
    if device == "cuda" and in_worker():
        import torch

        torch.cuda.set_device(local_rank())
    return device


def init_deepspeed_comm(args) -> None:
    """Let DeepSpeed see the process group before weights load (ZeRO-3 partitions them while
    `from_pretrained` builds the model). On GPUs the Trainer's arguments already do this; on CPU
    (`use_cpu`, gloo) they set up plain torch.distributed only, and ZeRO-3 would then size its
    batches for one process."""
    if not getattr(args, "deepspeed", None) or world_size() <= 1:
        return
    import deepspeed.comm as ds_comm

    if not ds_comm.is_initialized():
        _ = args.device  # creates the torch process group (accelerate's PartialState)
        ds_comm.init_distributed(dist_backend=args.ddp_backend or "gloo", verbose=False)


def finish() -> None:
    """End this worker's process group once every rank is done. Left to interpreter exit, DeepSpeed's
    CPU collectives tear down with a live thread and the process aborts ("terminate called without
    an active exception"), so torchrun reports a finished run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---- sample chats under sharded parameters ---------------------------------------------------------


class AllRanksSampleChat(TrainerCallback):
    """Wraps a SampleChatCallback so that every rank runs its generations (each forward pass of a
    sharded model is a collective), while only rank 0 logs and writes `samples.jsonl`."""

    def __init__(self, inner):
        self.inner = inner
        if not is_main_process():
            inner.out_file = Path(os.devnull)

    def _call(self, hook, args, state, control, **kwargs):
        state = copy.copy(state)
        state.is_world_process_zero = True  # the inner callback's "am I the one who answers" test
        return getattr(self.inner, hook)(args, state, control, **kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        return self._call("on_train_begin", args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        return self._call("on_step_end", args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        return self._call("on_train_end", args, state, control, **kwargs)


def sample_chat_callback(callback, params_sharded: bool):
    """The sample-chat callback fit for the run's parallelism (see AllRanksSampleChat)."""
    return AllRanksSampleChat(callback) if world_size() > 1 and params_sharded else callback
