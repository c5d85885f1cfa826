"""Export: checkpoint -> peft adapter dir, merge -> full model; both load with plain transformers/peft
in a process that never imports mmtune, and give the trained model's logits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from mmtune.data.conversation import Message
from mmtune.data.templates import get_template
from mmtune.errors import MmtuneError
from mmtune.export.merge import merge_adapter
from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.testing.runs import lora_run

PROMPT = [Message("user", "who are you?"), Message("assistant", "I am")]

PLAIN_LOADER = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    mode, path, base, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    if mode == "adapter":
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "who are you?"},
                                    {"role": "assistant", "content": "I am"}], tokenize=False)
    with torch.no_grad():
        logits = model.eval()(torch.tensor([ids])).logits[0, -1].tolist()
    assert not any(m == "mmtune" or m.startswith("mmtune.") for m in sys.modules)
    print(json.dumps({"logits": logits, "text": text}))
""")


def run_plain(mode: str, path, base, ids) -> dict:
    out = subprocess.run([sys.executable, "-c", PLAIN_LOADER, mode, str(path), str(base), json.dumps(ids)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def trained_logits(recipe, result, ids) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(recipe.model.path), str(result.final_dir))
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0, -1]


def test_adapter_and_merged_model_load_without_mmtune_and_match(exported):
    recipe, result, adapter, merged = exported
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter)
    text, _ = get_template("chatml").render(PROMPT)
    ids = tok(text, add_special_tokens=False).input_ids
    reference = trained_logits(recipe, result, ids)
    base_logits = run_plain("full", recipe.model.path, "-", ids)["logits"]
    assert not torch.allclose(torch.tensor(base_logits), reference, atol=1e-3)  # training changed something
    for mode, path in (("adapter", adapter), ("full", merged)):
        got = run_plain(mode, path, recipe.model.path, ids)
        assert torch.allclose(torch.tensor(got["logits"]), reference, atol=1e-4), mode
        assert got["text"] == text  # the stored template reproduces the training format


def test_exported_files(exported):
    recipe, result, adapter, merged = exported
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == recipe.model.path
    assert (adapter / "chat_template.jinja").is_file() or "chat_template" in (adapter / "tokenizer_config.json").read_text()
    shards = list(merged.glob("model-*.safetensors"))
    assert len(shards) > 1 and (merged / "model.safetensors.index.json").is_file()  # --max-shard-size honoured
    assert not list(merged.glob("*.bin"))


def test_to_hf_rejects_bad_checkpoints(tmp_path):
    recipe, _ = lora_run()
    with pytest.raises(MmtuneError, match="does not exist"):
        checkpoint_to_hf(recipe, tmp_path / "nope", tmp_path / "out")
    empty = tmp_path / "checkpoint-5"
    empty.mkdir()
    (empty / "trainer_state.json").write_text("{}")
    with pytest.raises(MmtuneError, match="no model or adapter weights"):
        checkpoint_to_hf(recipe, empty, tmp_path / "out")
    with pytest.raises(MmtuneError, match="not a peft adapter"):
        merge_adapter(recipe.model.path, empty, tmp_path / "merged")


def test_convert_cli_names(tmp_path, capsys):
    """`convert pth_to_hf` (XTuner's name) works like `to-hf`; user errors exit 2 without a traceback."""
    import yaml

    from mmtune.cli.main import main

    recipe, result = lora_run()
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    assert main(["convert", "pth_to_hf", str(cfg), str(result.work_dir / "checkpoint-100"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert main(["convert", "to-hf", str(cfg), str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
