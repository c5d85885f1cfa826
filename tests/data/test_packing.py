"""Packing: bins, packed rows, and — the key test — that a packed batch trains exactly like the
same samples run one by one, on real tiny Llama and Qwen2 models with sdpa, eager and mmtune's
packed sdpa (`mmtune_packed_sdpa`, what packed training uses in place of sdpa).

transformers 5 isolates packed samples when it gets per-sample `position_ids` and no attention
mask (use_cache=False); mmtune_packed_sdpa runs one causal SDPA per sample. Negative controls show
the comparison fails when attention crosses the sample boundaries, so the test can tell right
from wrong.
"""

from __future__ import annotations

import functools
import itertools
import math
import random

import pytest
import torch

from mmtune.data.collate import FlatCollator, PaddingCollator
from mmtune.data.conversation import Conversation, Message
from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import ConversationEncoder
from mmtune.data.packing import concat_samples, pack_lengths
from mmtune.data.templates import get_template
from mmtune.models.packed_attention import PACKED_SDPA, use_packed_attention

# --- pack_lengths ------------------------------------------------------------------------------------


def random_lengths(seed: int, max_length: int) -> list[int]:
    rng = random.Random(seed)
    n = rng.randint(1, 300)
    return [rng.choice([rng.randint(1, max_length), rng.randint(1, max_length // 8), rng.randint(max_length // 3, max_length // 2 + 50)])
            for _ in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_pack_lengths_properties(seed):
    max_length = 512
    lengths = random_lengths(seed, max_length)
    bins = pack_lengths(lengths, max_length)
    # Every index exactly once.
    assert sorted(itertools.chain.from_iterable(bins)) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert all(b for b in bins)
    assert max(loads) <= max_length
    # A new bin opens only when the sample fits no open bin, so no two bins could be merged.
    for a, b in itertools.combinations(loads, 2):
        assert a + b > max_length
    # Reasonably full: best-fit decreasing is within 11/9 of optimal (+ a constant); the optimum is at
    # least the total over max_length and at least the number of samples longer than half of it.
    lower = max(math.ceil(sum(lengths) / max_length), sum(n > max_length // 2 for n in lengths))
    assert len(bins) <= math.floor(11 / 9 * lower) + 1
    # Deterministic.
    assert pack_lengths(list(lengths), max_length) == bins


@pytest.mark.parametrize("seed", range(10))
def test_pack_lengths_small_samples_fill_bins(seed):
    rng = random.Random(100 + seed)
    lengths = [rng.randint(1, 128) for _ in range(rng.randint(50, 400))]
    bins = pack_lengths(lengths, 512)
    assert len(bins) <= math.ceil(sum(lengths) / 512) + 1


def test_pack_lengths_edge_cases():
    assert pack_lengths([], 16) == []
    assert pack_lengths([16], 16) == [[0]]
    assert pack_lengths([10, 6, 6, 10], 16) == [[0, 1], [3, 2]]  # longest first, ties by index
    assert pack_lengths([9, 7, 5, 2], 10) == [[0], [1, 3], [2]]  # 2 goes to the tightest bin that fits
    assert sorted(map(sorted, pack_lengths([4] * 8, 16))) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_pack_lengths_rejects_an_oversize_sample():
    with pytest.raises(ValueError, match="sample 1 has 17 tokens"):
        pack_lengths([3, 17, 2], 16)


# --- concat_samples and the collators -------------------------------------------------------------------


def test_concat_samples_restarts_positions_and_masks_each_first_label():
    a = {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}
    b = {"input_ids": [4, 5], "labels": [4, 5]}
    c = {"input_ids": [6, 7, 8, 9], "labels": [6, -100, 8, 9]}
    row = concat_samples([a, b, c])
    assert row["input_ids"] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert row["position_ids"] == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    # No token learns to predict the first token of the next sample.
    assert row["labels"] == [-100, 2, 3, -100, 5, -100, -100, 8, 9]
    assert concat_samples([b]) == {"input_ids": [4, 5], "labels": [-100, 5], "position_ids": [0, 1]}


def test_flat_collator_makes_one_row_without_attention_mask():
    packed = concat_samples([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}])
    plain = {"input_ids": [4, 5, 6], "labels": [4, 5, 6]}  # an unpacked row gets positions too
    batch = FlatCollator()([packed, plain])
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 0, 1, 2]]
    assert batch["labels"].tolist() == [[-100, 2, -100, -100, 5, 6]]
    assert batch["input_ids"].dtype == torch.long


def test_flat_collator_can_pass_flash_attention_boundaries():
    rows = [concat_samples([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}]),
            {"input_ids": [4, 5, 6], "labels": [4, 5, 6]}]
    batch = FlatCollator(seq_lens=True)(rows)
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 2, 3, 6]
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 3
    assert batch["position_ids"].tolist() == FlatCollator()(rows)["position_ids"].tolist()


def test_flat_collator_can_keep_only_the_trained_positions():
    rows = [concat_samples([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}])]
    batch = FlatCollator(trained_logits_only=True)(rows)
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5]]
    # position k is kept when labels[k + 1] is trained: logits at 0 predict 2, at 1 predict 3, at 3 predict 5
    assert batch["logits_to_keep"].tolist() == [[True, True, False, True, False]]
    assert batch["shift_labels"].tolist() == [2, 3, 5]
    untrained = FlatCollator(trained_logits_only=True)([concat_samples([{"input_ids": [1, 2], "labels": [-100, -100]}])])
    assert "logits_to_keep" not in untrained  # nothing to keep: the model's usual path


def test_padding_collator_pads_right_with_a_mask():
    batch = PaddingCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# --- packed == one by one, on real models ------------------------------------------------------------

CONVERSATIONS = [
    [("user", "Hi"), ("assistant", "Hello there, friend.")],
    [("user", "What color is the circle?"), ("assistant", "The circle is red and big."),
     ("user", "And the square?"), ("assistant", "Blue.")],
    [("user", "你好"), ("assistant", "你好,我是你的个人小助手。")],
    [("system", "You are a helpful assistant."), ("user", "Tell me a story about the old computer"),
     ("assistant", "One day a small model learned to write python code for people at home and at work.")],
]


ATTENTIONS = ("sdpa", "eager", "packed")


@functools.lru_cache(maxsize=None)
def _model(path, attn: str):
    """`packed` is how training gets it: an sdpa model switched by use_packed_attention."""
    from transformers import AutoModelForCausalLM

    load_as = "sdpa" if attn == "packed" else attn
    m = AutoModelForCausalLM.from_pretrained(path, attn_implementation=load_as, dtype=torch.float32).eval()
    if attn == "packed":
        assert use_packed_attention(m) == PACKED_SDPA
    return m


@pytest.fixture(scope="module")
def samples(tiny_tokenizer) -> list[dict]:
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=512)
    out = []
    for turns in CONVERSATIONS:
        s = encoder.encode(Conversation([Message(r, c) for r, c in turns]))
        out.append({"input_ids": s.input_ids, "labels": s.labels})
    lengths = [len(s["input_ids"]) for s in out]
    assert len(set(lengths)) == len(lengths)  # different lengths, so boundaries matter
    return out


@pytest.fixture(params=list(itertools.product(("llama", "qwen2"), ATTENTIONS)), ids=lambda p: f"{p[0]}-{p[1]}")
def model(request, tiny_llama_dir, tiny_qwen2_dir):
    family, attn = request.param
    m = _model(str(tiny_llama_dir if family == "llama" else tiny_qwen2_dir), attn)
    assert m.config._attn_implementation == (PACKED_SDPA if attn == "packed" else attn)
    return m


def is_packed(model) -> bool:
    return model.config._attn_implementation == PACKED_SDPA


def packed_batch(samples) -> dict:
    """Two packed rows (3 samples + 1 sample) flattened into one row, as training sees them."""
    return FlatCollator()([concat_samples(samples[:3]), concat_samples(samples[3:])])


_SOLO: dict = {}


def solo_runs(model, samples):
    """(summed token NLL, trained-token count, logits) of each sample run alone (memoized per model)."""
    if id(model) in _SOLO:
        return _SOLO[id(model)]
    out = []
    for s in samples:
        ids = torch.tensor([s["input_ids"]])
        labels = torch.tensor([s["labels"]])
        logits = model(input_ids=ids, use_cache=False).logits[0]
        nll = torch.nn.functional.cross_entropy(logits[:-1].double(), labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum")
        out.append((nll, int((labels[0, 1:] != IGNORE_INDEX).sum()), logits))
    _SOLO[id(model)] = out
    return out


@torch.no_grad()
def test_packed_loss_equals_token_mean_of_solo_runs(model, samples):
    packed = model(**packed_batch(samples), use_cache=False)
    solo = solo_runs(model, samples)
    expected = sum(nll for nll, _, _ in solo) / sum(n for _, n, _ in solo)
    assert packed.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The model's own per-sample loss agrees with the reference computed here.
    s = samples[1]
    own = model(input_ids=torch.tensor([s["input_ids"]]), labels=torch.tensor([s["labels"]]), use_cache=False).loss
    assert own.item() == pytest.approx((solo[1][0] / solo[1][1]).item(), rel=1e-5)


@torch.no_grad()
def test_packed_logits_equal_solo_logits(model, samples):
    logits = model(**packed_batch(samples), use_cache=False).logits[0]
    start = 0
    tolerance = 1e-5 if is_packed(model) else 1e-4
    for s, (_, _, solo) in zip(samples, solo_runs(model, samples)):
        n = len(s["input_ids"])
        assert (logits[start : start + n] - solo).abs().max().item() < tolerance
        start += n
    assert start == logits.shape[0]


@torch.no_grad()
def test_boundaries_from_the_collator_give_the_same_logits(model, samples):
    """cu_seq_lens_q (FlatCollator(seq_lens=True)) and position-id restarts mark the same samples."""
    rows = [concat_samples(samples[:3]), concat_samples(samples[3:])]
    plain = model(**FlatCollator()(rows), use_cache=False).logits
    with_lens = model(**FlatCollator(seq_lens=True)(rows), use_cache=False).logits
    assert (plain - with_lens).abs().max().item() < 1e-5


@torch.no_grad()
def test_negative_control_attention_across_samples_changes_the_loss(model, samples):
    """With a 2-D all-ones mask transformers does not detect the packing: samples see each other.
    The comparison above must be able to fail, and here it does. (mmtune_packed_sdpa keeps samples
    apart even then: its own control is the next test.)"""
    if is_packed(model):
        pytest.skip("mmtune_packed_sdpa isolates restarting position ids whatever the 2-D mask")
    batch = packed_batch(samples)
    good = model(**batch, use_cache=False)
    leaky = model(**batch, attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False)
    assert leaky.loss.item() != pytest.approx(good.loss.item(), rel=1e-4)
    # A later sample's logits move far beyond the tolerance used above.
    n0 = len(samples[0]["input_ids"])
    n1 = len(samples[1]["input_ids"])
    diff = (leaky.logits[0, n0 : n0 + n1] - good.logits[0, n0 : n0 + n1]).abs().max().item()
    assert diff > 1e-2
    # Tokens of the first sample see nothing before them either way.
    assert torch.allclose(leaky.logits[0, :n0], good.logits[0, :n0], atol=1e-4)


@torch.no_grad()
def test_negative_control_wrong_boundaries_change_the_packed_logits(model, samples):
    """mmtune_packed_sdpa's own path with samples 0 and 1 merged into one span (wrong cu_seq_lens):
    sample 1 now sees sample 0 and its logits move far beyond the tolerance; the others do not move.
    So the equality tests above would catch attention across a boundary."""
    if not is_packed(model):
        pytest.skip("the sdpa/eager control is the test above")
    batch = FlatCollator(seq_lens=True)([concat_samples(samples[:3]), concat_samples(samples[3:])])
    good = model(**batch, use_cache=False)
    cu = batch["cu_seq_lens_q"].tolist()
    merged = torch.tensor([cu[0], *cu[2:]], dtype=torch.int32)
    leaky = model(**{**batch, "cu_seq_lens_q": merged, "cu_seq_lens_k": merged}, use_cache=False)
    n0, n1 = cu[1], cu[2]
    assert (leaky.logits[0, n0:n1] - good.logits[0, n0:n1]).abs().max().item() > 1e-2
    assert (leaky.logits[0, :n0] - good.logits[0, :n0]).abs().max().item() < 1e-5
    assert (leaky.logits[0, n1:] - good.logits[0, n1:]).abs().max().item() < 1e-5
    assert leaky.loss.item() != pytest.approx(good.loss.item(), rel=1e-4)


@torch.no_grad()
def test_trained_logits_only_gives_the_same_loss(model, samples):
    rows = [concat_samples(samples[:3]), concat_samples(samples[3:])]
    full = model(**FlatCollator()(rows), use_cache=False)
    batch = FlatCollator(trained_logits_only=True)(rows)
    kept = model(**batch, use_cache=False)
    assert kept.logits.shape == (int(batch["logits_to_keep"].sum()), full.logits.shape[-1])
    assert (kept.logits - full.logits[batch["logits_to_keep"]]).abs().max().item() < 1e-5
    assert kept.loss.item() == pytest.approx(full.loss.item(), rel=1e-6)


@pytest.mark.parametrize("family, attn", list(itertools.product(("llama", "qwen2"), ("sdpa", "packed"))))
@pytest.mark.parametrize("trained_logits_only", [False, True], ids=["all_logits", "trained_logits"])
def test_packed_gradients_equal_solo_gradients(family, attn, trained_logits_only, tiny_llama_dir, tiny_qwen2_dir, samples):
    """One training step's gradients: packed row == token-mean over samples run alone (train mode)."""
    from transformers import AutoModelForCausalLM

    path = tiny_llama_dir if family == "llama" else tiny_qwen2_dir
    m = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="sdpa", dtype=torch.float32)
    if attn == "packed":
        use_packed_attention(m)
    m.train()
    rows = [concat_samples(samples[:3]), concat_samples(samples[3:])]
    m(**FlatCollator(trained_logits_only=trained_logits_only)(rows), use_cache=False).loss.backward()
    packed = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    total = sum(int((torch.tensor(s["labels"][1:]) != IGNORE_INDEX).sum()) for s in samples)
    for s in samples:
        out = m(input_ids=torch.tensor([s["input_ids"]]), labels=torch.tensor([s["labels"]]), use_cache=False)
        n = int((torch.tensor(s["labels"][1:]) != IGNORE_INDEX).sum())
        (out.loss * n / total).backward()
    for name, p in m.named_parameters():
        assert torch.allclose(packed[name], p.grad, rtol=1e-4, atol=1e-6), name
