"""SIGTERM (a job scheduler's stop, `kill`) and Ctrl-C end a run at the next step boundary with a
resumable checkpoint, instead of dying and losing up to `save_steps - 1` steps.

The first signal asks the Trainer to save and stop after the step in progress; `run_training` then
ends with one line naming the checkpoint (exit 143 for SIGTERM, 130 for Ctrl-C) and writes no
`final/`. A second Ctrl-C stops at once, as usual. Under torchrun every rank gets the signal, not
necessarily within the same step, so the ranks agree on the flag at each step end (one tiny
all-reduce) and all stop after the same step.
"""

from __future__ import annotations

import signal

import torch
from transformers import TrainerCallback

from mmtune.errors import MmtuneError

SIGNALS = {signal.SIGTERM: ("SIGTERM", 143), signal.SIGINT: ("Ctrl-C", 130)}


class Interrupted(MmtuneError):
    def __init__(self, name: str, exit_code: int, step: int, checkpoint: str):
        self.exit_code = exit_code
        super().__init__(f"stopped by {name} after step {step}; {checkpoint} holds the run",
                         hint="continue it with `mmtune train ... --resume auto`")


class StopOnSignal(TrainerCallback):
    def __init__(self):
        self.received: int | None = None  # the signal number, once one came
        self.previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.received = signum

    def on_train_begin(self, args, state, control, **kwargs):
        for signum in SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (training inside a server or a test thread)
                pass

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed(args):
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _agreed(self, args) -> bool:
        """Whether any rank got a signal, and which (the ranks must stop after the same step)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.received is not None
        flag = torch.tensor([self.received or 0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.received = int(flag.item()) or None
        return self.received is not None

    def outcome(self, state) -> Interrupted | None:
        if self.received is None:
            return None
        name, code = SIGNALS[signal.Signals(self.received)]
        return Interrupted(name, code, state.global_step, f"checkpoint-{state.global_step}")
