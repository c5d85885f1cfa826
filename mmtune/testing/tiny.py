"""Tiny models built from real transformers configs, with a tokenizer trained locally.

Nothing here is a mock: the tokenizer is a byte-level BPE trained with `tokenizers` and saved as
an ordinary HF tokenizer directory; the models are `LlamaForCausalLM` / `Qwen2ForCausalLM` with
small sizes, saved with `save_pretrained`. Tests and the demo load them with `from_pretrained(path)`
exactly like a hub model. Directories are cached (default `~/.cache/mmtune/tiny`, or
`$MMTUNE_CACHE/tiny`) and built atomically, so concurrent builders never see half a directory.
"""

from __future__ import annotations

import random
from pathlib import Path

from mmtune.testing.cache import build_atomically, cache_root

BUILD_VERSION = "v3"  # bump when what is built changes, so caches rebuild
SPECIAL_TOKENS = [
    "<|endoftext|>",  # pad
    "<|im_start|>",
    "<|im_end|>",  # eos for the ChatML template the tiny tokenizer carries
    "<s>",
    "</s>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<image>",
]
VOCAB_SIZE = 2048

_EN_WORDS = """the a an and or but if then so because of to in on at by for with from about as into over
under after before is are was were be been am do does did have has had can could will would should may
might must i you he she it we they me him her us them my your his its our their this that these those
who what where when why how which name assistant model language help helpful answer question please
thank thanks hello hi good morning day night time year people person world life work home family friend
red green blue yellow black white purple orange circle square triangle star shape color image picture
left right top bottom center one two three four five six seven eight nine ten many some all none more
most less least big small large tiny long short new old first last next great little own other same
different right wrong true false yes no not never always often sometimes today tomorrow yesterday
made make build built train trained training fine tune data learn learning know think say tell ask give
take see look find use want need like love feel try call come go get put set run write read book
computer code program python question answers chat talk speak language english chinese developer author
created team company open source project called named am assistant personal ai artificial intelligence
user system assistant user system assistant""".split()
_ZH_PHRASES = """你 我 他 她 它 们 是 的 了 在 有 和 不 这 那 个 一 二 三 上 下 中 大 小 好 人 名字 助手 小助手 叫 什么
谁 介绍 自己 开发 开发者 作者 创造 训练 模型 语言 智能 人工 帮助 问题 回答 可以 能 请 谢谢 你好 今天 明天
图片 图像 颜色 红色 绿色 蓝色 黄色 圆形 方形 三角形 左边 右边 数量 多少 哪里 为什么 怎么 身份 来自 公司
团队 微调 数据 学习 知道 告诉 我们 中文 英文 代码 程序 世界 时间 朋友 家 工作 生活 专属 个人""".split()


def _corpus(n_lines: int = 6000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.7:
            words = rng.choices(_EN_WORDS, k=rng.randint(4, 16))
            line = " ".join(words).capitalize() + rng.choice([".", "?", "!", ","])
        else:
            line = "".join(rng.choices(_ZH_PHRASES, k=rng.randint(3, 12))) + rng.choice(["。", "?", "!", ","])
        lines.append(line)
    lines += [" ".join(_EN_WORDS), "".join(_ZH_PHRASES), "0123456789 ,.;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`"]
    return lines


# Words of tool definitions and tool-call markup (JSON schema keys, the chat templates' tool
# instructions, the demo tools), so agent prompts take a few hundred tokens rather than one per byte.
_TOOL_WORDS = """function functions name description parameters properties type object string number integer
boolean array required enum arguments tool tools tool_call tool_response tool_calls call calls result error
json xml tags signatures provided within return assist query user may one more each get current weather
city temperature_c condition sunny cloudy rainy windy foggy snowy calculate operation add subtract multiply
divide plus minus times divided value unit units convert convert_units from_unit to_unit length weight km mi
kg lb kilometers miles kilograms pounds get_weather do arithmetic two numbers between environment ipython
plugin interpreter action_start action_end""".split()


def _tool_corpus(n_lines: int = 1500, seed: int = 0) -> list[str]:
    """JSON-shaped lines of tool words and numbers, as tool definitions and calls are written."""
    import json

    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        keys = rng.sample(_TOOL_WORDS, k=rng.randint(1, 4))
        obj = {k: rng.choice([rng.choice(_TOOL_WORDS), rng.randint(0, 999), rng.choice(_TOOL_WORDS).capitalize(),
                              rng.sample(_TOOL_WORDS, k=2), {rng.choice(_TOOL_WORDS): rng.choice(_TOOL_WORDS)}])
               for k in keys}
        lines.append(json.dumps(obj, ensure_ascii=False))
    return lines


def build_tokenizer(out: Path, tool_words: bool = False) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mmtune.data.templates import get_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() + (_tool_corpus() if tool_words else []), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<s>", "<|im_end|>", "<|endoftext|>")],
    )
    hf.chat_template = get_template("chatml").to_jinja()
    hf.model_max_length = 4096
    hf.save_pretrained(out)


def tiny_tokenizer_dir(tool_words: bool = False) -> Path:
    """The tiny tokenizer; with `tool_words`, one that also learned tool-definition and JSON words
    (agent prompts then take ~600 tokens, not ~1200), for the tool-calling tests."""
    name = f"tokenizer-tools-{BUILD_VERSION}" if tool_words else f"tokenizer-{BUILD_VERSION}"
    return build_atomically(cache_root() / name, lambda out: build_tokenizer(out, tool_words))


def _lm_config(family: str, vocab_size: int, tokenizer):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False, rms_norm_eps=1e-6)
    if family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True, rms_norm_eps=1e-6)
    raise ValueError(f"unknown tiny model family {family!r} (llama, qwen2)")


def build_lm(out: Path, family: str, seed: int = 0, tool_words: bool = False) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir(tool_words))
    config = _lm_config(family, len(tokenizer), tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Trained LMs have embeddings far larger than the 0.02-std init; with tiny ones the logits
    # stay near-uniform and a LoRA (which cannot touch them) could never become confident.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.2)
        model.get_output_embeddings().weight.normal_(0.0, 0.2)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_lm_dir(family: str = "qwen2", tool_words: bool = False) -> Path:
    """A saved tiny causal LM with its tokenizer ("llama" or "qwen2"); `tool_words`: with the
    tokenizer that knows tool-definition words (see tiny_tokenizer_dir)."""
    name = f"{family}-tools-{BUILD_VERSION}" if tool_words else f"{family}-{BUILD_VERSION}"
    return build_atomically(cache_root() / name, lambda out: build_lm(out, family, tool_words=tool_words))


TOOL_BASE_VERSION = "v2"  # bump when the copy pre-training changes


def build_tool_base(out: Path) -> None:
    """The tool-word tiny Qwen2, pre-trained to copy facts into JSON (see mmtune.testing.tiny_pretrain)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmtune.data.synth.tools import HELDOUT_CITIES, TRAIN_CITIES
    from mmtune.testing.tiny_pretrain import pretrain_to_copy, write_provenance

    src = tiny_lm_dir("qwen2", tool_words=True)
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    result = pretrain_to_copy(model, tokenizer, _corpus() + _tool_corpus(),
                              avoid_names=frozenset(TRAIN_CITIES + HELDOUT_CITIES))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_provenance(out, result)


def tiny_tool_base_dir() -> Path:
    """The agent tests' and demo's base: the tool-word tiny Qwen2 after a short copy pre-training
    (several CPU minutes the first time, then cached)."""
    return build_atomically(cache_root() / f"qwen2-tools-copy-{BUILD_VERSION}-{TOOL_BASE_VERSION}", build_tool_base)


if __name__ == "__main__":
    import sys

    for fam in sys.argv[1:] or ["qwen2", "llama"]:
        print(tiny_lm_dir(fam))
