"""Checkpoints that ship their own modeling code (`trust_remote_code`), and what mmtune checks of it.

Remote code runs only when a recipe or flag asks for it, and it is written for the transformers
release its authors had. Under a newer one it can fail in ways that are not the user's fault, or
worse, run and compute something else. So:
- model types mmtune loads natively (InternLM2, as Llama) never run the checkpoint's code;
- a missing package the code imports is one line naming it and the install command;
- an exception raised inside the checkpoint's code says so, and what to try;
- the first forward after loading must give finite logits (InternLM2's code under transformers 5
  left its rotary tables uninitialised: NaN losses that the Trainer logs as 0);
- packed rows are refused unless a probe shows that packing gives the same logits as each sample
  alone (code that ignores position ids lets packed samples attend to each other, silently).
"""

from __future__ import annotations

import logging
import traceback

import torch

from mmtune.errors import MmtuneError

log = logging.getLogger(__name__)
REMOTE_MODULES = "transformers_modules"  # where transformers imports a checkpoint's own code from
TRY = "try model.attn_implementation: eager, or a checkpoint transformers supports without remote code"


def native_instead_of_remote(source: str, kwargs: dict) -> dict:
    """`kwargs` for from_pretrained, with `trust_remote_code` off for the model types mmtune loads
    natively (their own code is not run, whatever the recipe says); the checkpoint is checked first."""
    from mmtune.models import internlm2

    if not internlm2.is_internlm2(source):
        return kwargs
    internlm2.check_checkpoint(source)
    if kwargs.get("trust_remote_code"):
        log.info("%s is an InternLM2 checkpoint: mmtune loads it natively (as Llama); its own code is not run", source)
    return {**kwargs, "trust_remote_code": False}


def remote_frame(error: BaseException) -> str | None:
    """The file of the checkpoint's own code where `error` was raised, if it was raised there."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if REMOTE_MODULES in frame.filename:
            return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
    return None


def load_error(error: BaseException, what: str, source: str) -> MmtuneError | None:
    """The user error for a failed load: a missing package, or an exception in the model's own code
    (None: neither, a bug to show with its traceback)."""
    if isinstance(error, ImportError):
        name = getattr(error, "name", None)
        first = str(error).splitlines()[0] if str(error) else f"No module named {name!r}"
        return MmtuneError(f"cannot load {what} from {source!r}: its code needs a package that is not installed: {first}",
                           hint=f"pip install {name}" if name else "install the package it names")
    where = remote_frame(error)
    if where is None:
        return None
    return MmtuneError(f"cannot load {what} from {source!r}: the model's own code ({where}) failed: "
                       f"{type(error).__name__}: {error}".splitlines()[0], hint=TRY)


def is_remote_code(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__module__.startswith(REMOTE_MODULES)


def _probe_ids(model, n: int, seed: int) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, max(4, vocab - 1), (1, n), generator=g).to(next(model.parameters()).device)


@torch.no_grad()
def _logits(model, **inputs) -> torch.Tensor:
    return model(**inputs).logits.float()


def check_first_forward(model) -> None:
    """A remote-code model's logits on a few tokens must be finite (see the module doc)."""
    if not is_remote_code(model):
        return
    was_training = model.training
    model.eval()
    try:
        logits = _logits(model, input_ids=_probe_ids(model, 8, 0))
    except Exception as e:  # noqa: BLE001 - an error in the model's own code is the user's to know about
        where = remote_frame(e)
        if where is None:
            raise
        raise MmtuneError(f"the model's own code ({where}) failed on its first forward: {type(e).__name__}: {e}"
                          .splitlines()[0], hint=TRY) from None
    finally:
        model.train(was_training)
    if not torch.isfinite(logits).all():
        raise MmtuneError(f"the model's own code ({type(model).__module__}) gives non-finite logits on its first "
                          "forward: training would see NaN losses",
                          hint="its code may not work with this transformers version; " + TRY)


def packing_problem(model) -> str | None:
    """Why packed rows cannot train a remote-code model (None: they can, or it is transformers' own
    code, whose packing mmtune tests). Two samples packed in one row, positions restarting at the
    second, must give the second the logits it has alone."""
    if not is_remote_code(model):
        return None
    was_training = model.training
    model.eval()
    try:
        first, second = _probe_ids(model, 5, 1), _probe_ids(model, 7, 2)
        alone = _logits(model, input_ids=second)[0]
        positions = torch.cat([torch.arange(5), torch.arange(7)])[None].to(first.device)
        packed = _logits(model, input_ids=torch.cat([first, second], dim=1), position_ids=positions)[0, 5:]
    except Exception as e:  # noqa: BLE001 - a forward that cannot take position ids cannot pack either
        return f"its own code cannot run a packed row ({type(e).__name__}: {e})".splitlines()[0]
    finally:
        model.train(was_training)
    diff = (packed - alone).abs().max().item()
    if not diff <= 1e-3 * max(1.0, alone.abs().max().item()):
        return (f"in its own code ({type(model).__module__.split('.')[-1]}) samples packed in one row attend to each "
                f"other (logits differ by {diff:.3g} from the sample alone)")
    return None
