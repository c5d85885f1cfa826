"""Text evaluation with the tiny self-cognition LoRA model: it names itself on held-out questions and
its perplexity beats the untrained base model's; the loss is exactly the training loss."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmtune.data.conversation import Conversation, Message
from mmtune.eval.text import evaluate_text, match_scores, normalize_answer
from mmtune.infer.load import load_for_inference
from mmtune.testing.runs import AUTHOR, NAME, lora_run

# phrasings that are not in the training data (self_cognition.QUESTIONS)
HELD_OUT = ["Could you tell me who you are?", "who are you exactly?", "What do people call you?",
            "Please tell me your name.", "Who are you, assistant?", "Introduce yourself briefly.",
            "whats your name", "Who made you and what is your name?"]
REFERENCE = f"I am {NAME}, an AI assistant developed by {AUTHOR}."


@pytest.fixture(scope="module")
def trained():
    recipe, result = lora_run()
    return recipe.model.path, str(result.final_dir)


@pytest.fixture(scope="module")
def held_out() -> list[Conversation]:
    return [Conversation([Message("user", q), Message("assistant", REFERENCE)], source=f"held-out:{i}")
            for i, q in enumerate(HELD_OUT)]


def test_match_scores():
    assert normalize_answer("  Hello,   World! ") == "hello world"
    assert match_scores("Paris.", "paris") == (True, True)
    assert match_scores("It is Paris, France", "Paris") == (False, True)
    assert match_scores("Lyon", "Paris") == (False, False)
    assert match_scores("anything", "...") == (False, False)  # an empty reference matches nothing


def test_trained_model_names_itself_and_beats_base(trained, held_out):
    base, adapter = trained
    tuned = load_for_inference(base, adapter=adapter, device="cpu")
    metrics = evaluate_text(tuned.model, tuned.tokenizer, tuned.template, held_out, max_new_tokens=24, batch_size=4)
    samples = metrics["samples"]
    assert len(samples) == metrics["n"] == len(HELD_OUT)
    named = sum(NAME in s["prediction"] for s in samples) / len(samples)
    assert named > 0.5, [s["prediction"] for s in samples]
    assert 0.0 <= metrics["contains_match"] <= 1.0 and 0.0 <= metrics["exact_match"] <= 1.0
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))

    untrained = load_for_inference(base, template="chatml", device="cpu")
    before = evaluate_text(untrained.model, untrained.tokenizer, tuned.template, held_out, generate=False)
    assert before["n_tokens"] == metrics["n_tokens"] > 0
    assert metrics["perplexity"] < before["perplexity"]
    assert "exact_match" not in before and "prediction" not in before["samples"][0]


def test_loss_is_the_training_loss_on_answer_tokens(trained, held_out):
    """Token-mean NLL over the ConversationEncoder labels = the model's own loss with those labels."""
    from mmtune.data.encode import ConversationEncoder

    base, adapter = trained
    loaded = load_for_inference(base, adapter=adapter, device="cpu")
    loaded.model.train()  # a callback's model is in train mode: it must come back so
    metrics = evaluate_text(loaded.model, loaded.tokenizer, loaded.template, held_out[:3], generate=False, batch_size=2)
    assert loaded.model.training
    loaded.model.eval()
    encoder = ConversationEncoder(loaded.tokenizer, loaded.template, 2048)
    nll, count = 0.0, 0
    with torch.no_grad():
        for conv, sample in zip(held_out[:3], metrics["samples"]):
            enc = encoder.encode(conv)
            out = loaded.model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels]))
            n = sum(1 for label in enc.labels[1:] if label != -100)  # the first token is never predicted
            assert sample["loss"] == pytest.approx(float(out.loss), rel=1e-4) and sample["n_tokens"] == n
            nll += float(out.loss) * n
            count += n
    assert metrics["n_tokens"] == count
    assert metrics["loss"] == pytest.approx(nll / count, rel=1e-4)


def test_cli_eval_text(trained, tmp_path, capsys):
    from mmtune.cli.main import main

    base, adapter = trained
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": REFERENCE}]}) + "\n"
                            for q in HELD_OUT[:4]))
    work = tmp_path / "text_eval"
    assert main(["eval", "text", base, "--adapter", adapter, "--data", str(data), "--work-dir", str(work),
                 "--max-new-tokens", "16", "--no-progress", "--prompt-template", "chatml"]) == 0
    assert "4 conversations" in capsys.readouterr().out
    summary = json.loads((work / "summary.json").read_text())
    assert summary["template"] == "chatml"  # --prompt-template, as every other command spells it
    assert {"loss", "perplexity", "exact_match", "contains_match", "n", "n_tokens"} <= set(summary)
    details = [json.loads(line) for line in (work / "predictions.jsonl").read_text().splitlines()]
    assert len(details) == 4 and details[0]["reference"] == REFERENCE
    assert {"question", "prediction", "exact_match", "contains_match", "loss", "n_tokens"} <= set(details[0])
    assert main(["eval", "text", base, "--data", str(tmp_path / "missing.jsonl"), "--work-dir", str(work)]) == 2
    assert "file not found" in capsys.readouterr().err
