"""The typed schema of a recipe. A recipe is data: YAML validated against these models.

Every model forbids unknown keys, so a misspelt key is an error (load.py adds a "did you mean").
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


# The choices of the registries (data formats, chat templates, projectors), which live on floors above
# the config; tests/config/test_registries.py keeps each list equal to its registry.
FORMAT_CHOICES = Literal["auto", "llava", "openai", "alpaca", "minicpm", "msagent"]
TEMPLATE_CHOICES = Literal["auto", "chatml", "qwen_chat", "internlm2_chat", "llama3_chat", "phi3_chat", "vicuna", "default",
                           "qwen3_chat", "llama3_1_chat"]
PROJECTOR_CHOICES = Literal["mlp2x_gelu", "resampler"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VisionConfig(Section):
    path: str = Field(description="CLIP or SigLIP vision encoder: hub id or local directory")
    feature_layer: int = Field(-2, description="hidden layer whose features feed the projector (-2: penultimate)")
    feature_select: Literal["patch", "cls_patch"] = "patch"


class ProjectorConfig(Section):
    type: PROJECTOR_CHOICES = "mlp2x_gelu"
    query_nums: int = Field(64, ge=1, description="learned queries (image tokens) of the resampler")


class ModelConfig(Section):
    path: str = Field(description="HF hub id or local directory of the base model (the LLM of a VLM)")
    tokenizer: Optional[str] = Field(None, description="tokenizer path when it differs from the model's")
    trust_remote_code: bool = Field(False, description="run model code shipped with the checkpoint (only if you trust it)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"]] = "sdpa"
    vision: Optional[VisionConfig] = Field(None, description="makes the model a LLaVA-style VLM")
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    pretrained_projector: Optional[str] = Field(None, description="projector dir from a pretrain run (finetune stage)")


class DatasetConfig(Section):
    path: str
    format: FORMAT_CHOICES = "auto"
    repeat: int = Field(1, ge=1, description="repeat this file N times (weight small, important data up)")


class SliceConfig(Section):
    """MiniCPM-V style slicing of high-resolution images into a grid of slices plus a thumbnail."""

    max_slice_nums: int = Field(9, ge=1)
    scale_resolution: int = Field(448, ge=14)
    patch_size: int = Field(14, ge=1)


class DataConfig(Section):
    datasets: list[DatasetConfig] = Field(min_length=1)
    template: TEMPLATE_CHOICES = Field("auto", description="chat template name, or 'auto' for the tokenizer's own")
    system: Optional[str] = Field(None, description="system prompt added to conversations that have none")
    replace: dict[str, str] = Field(
        default_factory=dict,
        description="fill template placeholders in the data: {name: Nova} turns every {{name}} into Nova "
                    "(LLaMA-Factory's identity.json)")
    max_length: int = Field(2048, ge=16)
    pack_to_max_length: bool = True
    overlong: Literal["truncate", "drop"] = "truncate"
    shuffle: bool = Field(True, description="shuffle the rows every epoch (false: in order, e.g. a curriculum; packed rows in packing order)")
    num_proc: int = Field(1, ge=1, description="tokenization workers (threads for text, processes for image data)")
    fast_bpe: bool = Field(True, description="tokenize text data with tiktoken where it gives the tokenizer's ids (checked on every 10th chunk)")
    image_folder: Optional[str] = Field(None, description="image paths in records are relative to this folder")
    image_mode: Literal["pad", "resize"] = Field("pad", description="pad to square with the mean colour (LLaVA) or resize")
    slice: Optional[SliceConfig] = None
    processor: dict[str, Union[int, float, bool, str, list]] = Field(
        default_factory=dict,
        description="settings of a native VLM's processor, stored with the checkpoint (MiniCPM-V: max_slice_nums, "
                    "scale_resolution, slice_mode, downsample_mode, use_image_id; Qwen-VL: min_pixels, max_pixels; "
                    "the families in docs/native_vlm.md)")
    bad_images: Literal["resample", "skip"] = Field("resample", description="a record whose image cannot be read")
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="stop when more records than this are unreadable or have bad images")


class LoraConfig(Section):
    r: int = Field(64, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    modules_to_save: list[str] = Field(default_factory=list)


class MethodConfig(Section):
    type: Literal["lora", "qlora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    stage: Literal["pretrain", "finetune"] = Field("finetune", description="VLM stage: pretrain trains the projector only")
    trainable: Optional[list[str]] = Field(
        None, description="parts to train: llm, llm.lora, and for a VLM projector, vision, vision.lora "
                          "(default by type and stage: mmtune.models.trainable)"
    )


class TrainConfig(Section):
    epochs: float = Field(1, gt=0)
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run all epochs)")
    micro_batch_size: int = Field(1, ge=1)
    gradient_accumulation: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0)
    vision_lr: Optional[float] = Field(None, gt=0, description="learning rate of the vision tower when it trains "
                                                                 "(VLM; default: lr)")
    projector_lr: Optional[float] = Field(None, gt=0, description="learning rate of the projector / merger when it "
                                                                   "trains (VLM; default: lr)")
    weight_decay: float = Field(0.0, ge=0)
    adam_beta2: float = Field(0.999, gt=0, lt=1, description="AdamW's second-moment decay (MiniCPM-V's scripts: 0.95)")
    # the fused kernel (CPU and CUDA) is also the Trainer's own default since torch 2.8
    optimizer: Literal["adamw_torch_fused", "adamw_torch", "paged_adamw_8bit", "adamw_8bit", "sgd"] = "adamw_torch_fused"
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, ge=0)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    gradient_checkpointing: bool = False
    chunked_loss: bool = Field(
        True, description="loss over the vocabulary a chunk of tokens at a time, without full-vocabulary logits "
                          "(same loss and gradients; less memory). Off under ZeRO-3 / FSDP and for heads with LoRA")
    fused_layers: bool = Field(
        True, description="Llama-style RMSNorm and SwiGLU MLP modules keep only their inputs for backward and "
                          "recompute the rest (same outputs and gradients; fewer activations). Off under ZeRO-3 / FSDP")
    seed: int = 0
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=0, description="checkpoint every N steps; 0: no checkpoints (final/ is still written, resume is impossible)")
    save_total_limit: int = Field(2, ge=1)
    dataloader_workers: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class EvalConfig(Section):
    every_n_steps: int = Field(500, ge=1, description="sample chats and eval.datasets every N steps, and at the end")
    evaluation_inputs: list[str] = Field(default_factory=list)
    evaluation_images: list[str] = Field(default_factory=list, description="images for the evaluation inputs (VLM)")
    system: Optional[str] = Field(None, description="system prompt of the sample chats (default: data.system)")
    max_new_tokens: int = Field(64, ge=1, description="longest sample-chat (and eval.generate) answer, in tokens")
    datasets: list[DatasetConfig] = Field(
        default_factory=list,
        description="held-out files scored during training (eval/loss, eval/ppl on the answer tokens); "
                    "entries as in data.datasets, without repeat",
    )
    max_samples: Optional[int] = Field(
        None, ge=1, description="score a fixed random subset of this many eval conversations (null: all of them)"
    )
    generate: bool = Field(
        False, description="also answer each eval conversation's last question and report exact / contains match (slow)"
    )
    batch_size: Optional[int] = Field(None, ge=1, description="eval conversations per forward pass (default: train.micro_batch_size)")

    @model_validator(mode="after")
    def _images_match_inputs(self) -> "EvalConfig":
        n = len(self.evaluation_images)
        if n > 1 and n != len(self.evaluation_inputs):
            raise ValueError(f"evaluation_images has {n} images for {len(self.evaluation_inputs)} inputs: "
                             "give one image for all inputs or one per input")
        return self

    @field_validator("datasets")
    @classmethod
    def _eval_data_is_read_once(cls, datasets: list[DatasetConfig]) -> list[DatasetConfig]:
        for i, ds in enumerate(datasets):
            if ds.repeat != 1:
                raise ValueError(f"entry {i} ({ds.path}) sets repeat: {ds.repeat}, but eval data is scored once; "
                                 "drop repeat (it weights training data)")
        return datasets


class Recipe(Section):
    """A whole training recipe."""

    name: Optional[str] = None
    description: Optional[str] = None
    model: ModelConfig
    data: DataConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    work_dir: Optional[str] = Field(None, description="default output dir (mmtune train --work-dir wins)")
