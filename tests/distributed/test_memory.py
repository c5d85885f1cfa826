"""The memory estimate against hand-computed cases on a Llama-2-7B-sized config (meta device: no
weights), and the `mmtune estimate-memory` command on a tiny recipe."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mmtune.config.schema import LoraConfig
import mmtune.estimate as M

PSI = 6_738_415_616  # Llama-2-7B's parameter count


@pytest.fixture(scope="module")
def llama7b():
    return M.count_model(M.synthetic_llama(), LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj"]))


def test_counts_parameters_from_the_config_alone(llama7b):
    assert llama7b.params == PSI
    assert llama7b.lora_params == 4_194_304  # what peft prints for r=8 on q_proj, v_proj
    assert llama7b.embedding_params == 32000 * 4096
    assert llama7b.layer_params == 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    assert llama7b.quantizable_params == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # lm_head stays 16-bit
    assert (llama7b.hidden_size, llama7b.num_layers, llama7b.num_heads, llama7b.vocab_size) == (4096, 32, 32, 32000)


def parts(size, **setup):
    est = M.estimate(size, M.Setup(**setup))
    return est, {k: v for k, v in est.parts.items()}


def test_full_bf16_adamw_by_zero_stage(llama7b):
    """Full fine-tune, bf16, AdamW — the ZeRO paper's table: 2Ψ + 2Ψ + KΨ with K = 12 under DeepSpeed;
    plain Trainer bf16 keeps AdamW's two states in bf16 (4Ψ)."""
    _, p = parts(llama7b, method="full", gpus=1)
    assert (p["weights"], p["gradients"], p["optimizer"]) == (2 * PSI, 2 * PSI, 4 * PSI)

    n = 8
    _, z1 = parts(llama7b, method="full", gpus=n, strategy="zero1")
    assert (z1["weights"], z1["gradients"], z1["optimizer"]) == (2 * PSI, 2 * PSI, 12 * PSI / n)
    _, z2 = parts(llama7b, method="full", gpus=n, strategy="zero2")
    assert (z2["weights"], z2["gradients"], z2["optimizer"]) == (2 * PSI, 2 * PSI / n, 12 * PSI / n)
    _, z3 = parts(llama7b, method="full", gpus=n, strategy="zero3")
    working_set = 2 * llama7b.layer_params * 2  # two gathered decoder layers in bf16
    assert (z3["weights"], z3["gradients"], z3["optimizer"]) == (2 * PSI / n + working_set, 2 * PSI / n, 12 * PSI / n)
    assert z3["weights"] + z3["gradients"] + z3["optimizer"] == pytest.approx(16 * PSI / n + working_set)
    # ZeRO-3 with both offloads keeps only the working set of parameters on the GPU
    _, off = parts(llama7b, method="full", gpus=n, strategy="zero3", offload_optimizer=True, offload_params=True)
    assert (off["weights"], off["gradients"], off["optimizer"]) == (working_set, 0, 0)


def test_lora_and_qlora_bf16(llama7b):
    lora = llama7b.lora_params
    _, p = parts(llama7b, method="lora")
    assert p["weights"] == 2 * PSI + 4 * lora  # bf16 base + fp32 adapters
    assert (p["gradients"], p["optimizer"]) == (4 * lora, 8 * lora)
    _, q = parts(llama7b, method="qlora")
    quant = llama7b.quantizable_params
    assert M.NF4_BYTES == pytest.approx(0.5159, abs=1e-4)  # 4.127 bits, the QLoRA paper's double quantization
    assert q["weights"] == pytest.approx(quant * M.NF4_BYTES + (PSI - quant) * 2 + 4 * lora)
    assert 3.6 < q["weights"] / M.GiB < 3.8  # a 7B in 4-bit: ~3.7 GiB
    # ZeRO-3 shards the frozen base too
    _, z3 = parts(llama7b, method="lora", gpus=4, strategy="zero3")
    assert z3["weights"] == pytest.approx((2 * PSI + 4 * lora) / 4 + 2 * llama7b.layer_params * 2)


def test_activations_per_decoder_layer(llama7b):
    """Hand-computed bytes per token and layer for Llama-2-7B (h 4096, i 11008, 32 heads, no GQA):
    what transformers' modules save (tests/train/test_memory_activations.py counts them)."""
    s, h, i, L, a, V, r = 2048, 4096, 11008, 32, 32, 32000, 16
    # LoRA, bf16 (under the Trainer's autocast), sdpa: norms 2(4h + 4) + attention (q, out 2·2h; k, v 2·2h;
    # lse 4a) + MLP 3·2i + the 7 adapters' own bf16 copies of their inputs (6·2h + 2i) + their activations 7·2r
    lora = 8 * h + 8 + (8 * h + 4 * a) + 6 * i + (12 * h + 2 * i) + 14 * r
    _, p = parts(llama7b, seq_len=s, micro_batch=1)
    assert p["activations"] == lora * s * L
    assert p["logits"] == s * V * 12  # bf16 logits, fp32 log-softmax, its fp32 gradient and the bf16 cast
    # eager keeps the scores (fp32 softmax + bf16 probabilities) and k, v at all heads
    _, eager = parts(llama7b, seq_len=s, attention="eager")
    assert eager["activations"] == (lora - (8 * h + 4 * a) + 8 * h + a * s * 6) * s * L
    # gradient checkpointing: every layer's input, plus one layer recomputed
    _, ckpt = parts(llama7b, seq_len=s, micro_batch=2, gradient_checkpointing=True)
    assert ckpt["activations"] == 2 * s * 2 * h * L + lora * s * 2
    # full fine-tune in fp32: norms 2(4h + 4 + 4h), attention 2·4h + 2·4h + 4a, MLP 3·4i, inputs 2·4h + 4i
    full32 = (16 * h + 8) + (16 * h + 4 * a) + 12 * i + (8 * h + 4 * i)
    _, fp32 = parts(llama7b, method="full", seq_len=s, precision="fp32")
    assert fp32["activations"] == full32 * s * L
    # train.fused_layers: norms keep their input (2h + 4 each), the MLP gate and up (2·2i)
    _, fused = parts(llama7b, seq_len=s, fused_layers=True)
    assert fused["activations"] == (lora - (8 * h + 8) + (4 * h + 8) - 2 * i) * s * L


def test_chunked_loss_keeps_one_chunk_of_logits(llama7b):
    s, b, h, V = 4096, 2, 4096, 32000
    rows = 2**25 // V  # 1,048 tokens of logits at a time
    _, lora = parts(llama7b, seq_len=s, micro_batch=b, chunked_loss=True)
    assert lora["logits"] == rows * V * (4 + 2) + s * b * h * 2  # chunk fp32 + its bf16 copy, hidden-state gradient
    _, plain = parts(llama7b, seq_len=s, micro_batch=b)
    assert plain["logits"] == s * b * V * 12 and plain["logits"] / lora["logits"] > 9
    _, full = parts(llama7b, method="full", seq_len=s, micro_batch=b, chunked_loss=True)
    assert full["logits"] == lora["logits"] + V * h * (4 + 2)  # + the head gradient's fp32 accumulator and bf16 copy
    _, z3 = parts(llama7b, method="full", gpus=4, strategy="zero3", seq_len=s, micro_batch=b, chunked_loss=True)
    assert z3["logits"] == plain["logits"]  # ZeRO-3: the head is sharded, mmtune keeps the plain loss


def test_more_gpus_never_need_more_memory_and_table_marks_oom(llama7b):
    base = M.Setup(seq_len=1024, strategy="zero3", gradient_checkpointing=True)
    table = M.estimate_table(llama7b, base, methods=("lora", "qlora", "full"), gpus=(1, 2, 4, 8))
    assert table["qlora"][2] is None  # 4-bit weights cannot be ZeRO-3 sharded here
    full = [table["full"][n].gib for n in (1, 2, 4, 8)]
    assert full == sorted(full, reverse=True) and full[0] > 100 > full[-1]
    from mmtune.cli.estimate import format_table

    text = format_table(table, gpu_mem=80)
    assert text.splitlines()[0].split("|")[1:-1] == [" method ", " 1 GPU         ", " 2 GPUs      ", " 4 GPUs      ",
                                                      " 8 GPUs      "]
    assert "OOM" in text.splitlines()[-1] and "n/a" in text


def test_vision_encoder_adds_parameters_and_image_activations(llama7b):
    from transformers import CLIPVisionConfig

    clip_l = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)
    vlm = M.add_vision(llama7b, clip_l)
    assert 300e6 < vlm.vision_params < 310e6  # CLIP ViT-L/14-336 vision tower: ~303M
    assert vlm.projector_params == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert vlm.image_tokens == 577
    frozen = M.estimate(vlm, M.Setup(method="lora"))
    trained = M.estimate(vlm, M.Setup(method="lora", trainable=("projector", "llm.lora", "vision")))
    assert trained.parts["vision activations"] == pytest.approx(24 * frozen.parts["vision activations"])
    assert trained.parts["optimizer"] > frozen.parts["optimizer"] + 2 * vlm.vision_params
    pretrain = M.estimate(vlm, M.Setup(method="lora", stage="pretrain"))
    assert pretrain.parts["optimizer"] == 4 * vlm.projector_params  # projector only, AdamW states in bf16


def test_deepspeed_config_sets_strategy_and_buckets():
    z3o = M.deepspeed_setup("zero3_offload", hidden_size=4096)
    assert z3o["strategy"] == "zero3" and z3o["offload_optimizer"] and z3o["offload_params"]
    assert z3o["comm_bucket_elements"] == 4096**2 + int(0.9 * 4096**2)
    z2 = M.deepspeed_setup("zero2", hidden_size=4096)
    assert z2["strategy"] == "zero2" and not z2["offload_optimizer"]


def test_estimate_memory_command(tiny_qwen2_dir, tmp_path, capsys):
    from mmtune.cli.main import main
    from mmtune.config.load import dump_config
    from mmtune.testing.runs import self_cognition_recipe

    data = tmp_path / "d.jsonl"
    data.write_text("")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_config(self_cognition_recipe(tiny_qwen2_dir, data)))
    assert main(["estimate-memory", str(recipe), "--gpus", "1", "2", "--deepspeed", "zero3", "--gpu-mem", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "model: qwen2-v3: 1.00M parameters" in out and "LoRA trains 299.01K" in out
    assert "| LoRA   |" in out and "| full   |" in out
    assert "does NOT fit in 0.5 GiB" in out  # the CUDA context alone is 1 GiB
    # the memory savers are named, and off where training turns them off (ZeRO-3 shards the weights)
    assert "chunked loss off (sharded weights), fused layers off (sharded weights)" in out
    assert main(["estimate-memory", str(recipe), "--gpus", "1"]) == 0
    assert "chunked loss on, fused layers on" in capsys.readouterr().out
    # a synthetic 7B config.json counts without any weights
    M.synthetic_llama().save_pretrained(tmp_path / "llama7b")
    assert main(["estimate-memory", str(recipe), "--config-json", str(tmp_path / "llama7b" / "config.json"),
                 "--gpus", "8", "--methods", "full", "--set", "train.precision=bf16"]) == 0
    assert "6.74B parameters" in capsys.readouterr().out


def test_setup_from_recipe(tiny_qwen2_dir, tmp_path):
    from mmtune.testing.runs import self_cognition_recipe

    data = tmp_path / "d.jsonl"
    data.write_text("")
    recipe = self_cognition_recipe(tiny_qwen2_dir, data, train={"gradient_checkpointing": True, "micro_batch_size": 2})
    setup = M.setup_from_recipe(recipe, gpus=4, fsdp="full_shard", fsdp_offload=True)
    assert setup == replace(setup, method="lora", gpus=4, strategy="fsdp_full_shard", offload_params=True,
                            offload_optimizer=True, micro_batch=2, seq_len=192, gradient_checkpointing=True)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "minicpmv4_6", "internvl", "gemma3", "smolvlm",
                                    "llava_onevision"])
def test_native_vlm_counts_equal_the_built_model(family):
    """Vision / projector / LLM parameters and the LLM LoRA, counted on meta from the config, equal the
    real model's as training builds it (its family's parts, LoRA on the language model's blocks)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mmtune.config.schema import LoraConfig
    from mmtune.models.families import FAMILIES
    from mmtune.models.trainable import apply_trainable, trainable_summary
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    path = tiny_vlm_dir(family)
    lora = LoraConfig(r=4, alpha=8, dropout=0.0)
    size = M.count_native_vlm(AutoConfig.from_pretrained(path), FAMILIES[family], lora)
    model = apply_trainable(AutoModelForImageTextToText.from_pretrained(path), ["llm.lora"], lora)
    summary = trainable_summary(model, FAMILIES[family].parts)
    lora_params = summary["llm"][0]
    assert (size.vision_params, size.projector_params) == (summary["vision"][1], summary["projector"][1])
    assert size.params == summary["llm"][1] - lora_params and size.lora_params == lora_params > 0
    assert size.family == family and size.image_tokens > 0 and size.images_per_sample >= 1


def test_minicpm_v_4_6_estimate_from_its_released_config(capsys):
    """The MiniCPM-V 4.6 recipes on the released model's sizes (docs/configs): 1.30B parameters; the
    LoRA recipe trains the vision tower and resampler in full (as finetune_lora.sh), so with them the
    LoRA row needs more than the default LLM-only LoRA would."""
    from pathlib import Path

    from mmtune.cli.main import main

    config = Path(__file__).parents[2] / "docs" / "configs" / "minicpm-v-4.6" / "config.json"
    assert main(["estimate-memory", "minicpm_v_4_6_lora", "--config-json", str(config), "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    assert "752.16M parameters" in out and "vision: 522.30M parameters" in out and "10 image(s) or slices" in out
    recipe_lora = float(out.split("| LoRA   | ")[1].split(" GiB")[0])
    assert main(["estimate-memory", "minicpm_v_4_6_lora", "--config-json", str(config), "--gpus", "1",
                 "--set", "method.trainable=[llm.lora]"]) == 0
    llm_only = float(capsys.readouterr().out.split("| LoRA   | ")[1].split(" GiB")[0])
    assert recipe_lora > llm_only + 1  # AdamW states and gradients of the 0.55B vision + resampler
