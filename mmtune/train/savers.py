"""The memory savers of a run (`train.chunked_loss`, `train.fused_layers`), on for its training only.

Both need whole weights: under ZeRO-3 / FSDP a weight is whole only while its module's own hooks
have gathered it, so there they stay off (and the log says so). The chunked loss is the trainer's
(`MmtuneTrainer.chunked_loss`, used by its `compute_loss`); the fused layers are mmtune modules
swapped into the model and swapped back out when training ends (mmtune.models.fused_layers).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager

from mmtune.models.chunked_loss import ChunkedLoss
from mmtune.models.fused_layers import fused_layers

log = logging.getLogger("mmtune.train")


@contextmanager
def memory_savers(trainer, train_cfg, params_sharded: bool):
    """Within the context, `trainer` trains its model with the savers `train_cfg` asks for."""
    with ExitStack() as stack:
        if train_cfg.chunked_loss:
            if params_sharded:
                log.info("chunked loss off: the lm_head weight is sharded (ZeRO-3 / FSDP)")
            else:
                trainer.chunked_loss = ChunkedLoss.for_model(trainer.model)
                if trainer.chunked_loss is not None:
                    log.info("loss: chunked cross-entropy (no full-vocabulary logits)")
                    stack.callback(setattr, trainer, "chunked_loss", None)
        if train_cfg.fused_layers:
            if params_sharded:
                log.info("fused layers off: parameters are sharded (ZeRO-3 / FSDP)")
            else:
                norms, mlps = stack.enter_context(fused_layers(trainer.model))
                if norms or mlps:
                    log.info("fused layers: %d RMSNorm and %d SwiGLU MLP modules keep only their inputs for backward",
                             norms, mlps)
        yield
