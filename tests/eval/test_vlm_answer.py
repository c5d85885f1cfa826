"""The VLM answerer plumbing with an (untrained) tiny LLaVA: every question reaches the model with
its image (batched generation: tests/infer/test_batched_vlm.py), loaded as an exported LLaVA dir or as LLM + --visual-encoder + --llava DIR.
No accuracy claim: learning is tested where the LLaVA training is."""

from __future__ import annotations

import json

import pytest

from mmtune.errors import MmtuneError


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.models.llava import build_llava
    from mmtune.models.projector import save_projector
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_vision_dir

    root = tmp_path_factory.mktemp("vlm")
    llm, encoder = str(tiny_lm_dir("qwen2")), str(tiny_vision_dir("clip"))
    model, processor = build_llava(llm, encoder)
    model.save_pretrained(root / "exported")
    processor.save_pretrained(root / "exported")
    save_projector(model, root / "run")
    shapes = make_shapes_dataset(root / "shapes", n=8, seed=2)
    return {"llm": llm, "encoder": encoder, "exported": str(root / "exported"), "run": str(root / "run"),
            "dev": shapes.files["mmbench_dev"]}


def test_each_item_is_asked_with_its_image(tiny_llava, tmp_path):
    from mmtune.eval.mmbench import run_mmbench
    from mmtune.eval.answer import vlm_answerer
    from mmtune.infer.load import load_for_inference

    loaded = load_for_inference(tiny_llava["exported"], template="chatml", device="cpu")
    assert loaded.vision is not None
    seen = []
    generate = loaded.model.generate

    def spy(**kwargs):
        per_prompt = (kwargs["input_ids"] == loaded.model.config.image_token_id).sum(dim=1)
        seen.append((kwargs["pixel_values"].shape[0], kwargs["input_ids"].shape[0], per_prompt.tolist()))
        return generate(**kwargs)

    loaded.model.generate = spy
    result = run_mmbench(tiny_llava["dev"], vlm_answerer(loaded), tmp_path / "w", batch_size=2, progress=False)
    # asked two at a time: one image per prompt, every prompt with its image tokens
    assert sum(prompts for _, prompts, _ in seen) == result.summary["n_rows"] > 2
    assert all(images == prompts and min(tokens) > 0 and len(set(tokens)) == 1 for images, prompts, tokens in seen)
    assert max(prompts for _, prompts, _ in seen) == 2


def test_cli_with_exported_llava_and_with_parts(tiny_llava, tmp_path, capsys):
    from mmtune.cli.main import main

    common = ["--prompt-template", "chatml", "--data-path", str(tiny_llava["dev"]), "--max-new-tokens", "2",
              "--no-progress"]
    assert main(["eval", "mmbench", tiny_llava["exported"], "--work-dir", str(tmp_path / "a"), *common]) == 0
    assert main(["eval", "mmbench", tiny_llava["llm"], "--visual-encoder", tiny_llava["encoder"],
                 "--llava", tiny_llava["run"], "--work-dir", str(tmp_path / "b"), *common]) == 0
    for work in ("a", "b"):
        assert json.loads((tmp_path / work / "summary.json").read_text())["n_rows"] > 0
    capsys.readouterr()
    assert main(["eval", "mmbench", tiny_llava["llm"], "--visual-encoder", tiny_llava["encoder"],
                 "--work-dir", str(tmp_path / "c"), *common]) == 2
    assert "--visual-encoder needs --llava" in capsys.readouterr().err
    assert main(["eval", "mmbench", tiny_llava["llm"], "--llava", tiny_llava["llm"],
                 "--work-dir", str(tmp_path / "d"), *common]) == 2
    assert "not an exported LLaVA model" in capsys.readouterr().err


def test_vlm_answerer_refuses_a_text_model(tiny_llava):
    from mmtune.eval.answer import vlm_answerer
    from mmtune.infer.load import load_for_inference

    with pytest.raises(MmtuneError, match="not a vision-language model"):
        vlm_answerer(load_for_inference(tiny_llava["llm"], template="chatml", device="cpu"))
