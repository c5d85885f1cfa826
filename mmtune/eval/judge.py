"""`--judge URL`: ask an LLM behind an OpenAI-compatible endpoint which option an unmatched answer means,
as VLMEvalKit's `extract_answer_from_item` does.

* Only unmatched answers are sent; refusals (VLMEvalKit's "Z") are wrong and never sent. Under
  CircularEval a row is not sent when its group is already lost to another rotation.
* The prompt is VLMEvalKit's (English, or Chinese when the question has a CJK ideograph), sent as one
  user message to `POST {URL}/v1/chat/completions`, temperature 0.
* The judge's reply is read with VLMEvalKit's rules (match_vlmevalkit.infer); a reply naming no
  option is asked again, 3 tries in all. A reply of "Z" means the answer matches no option: wrong.
* After 3 replies naming no option, VLMEvalKit picks at random among the options and "Z"; mmtune
  does the same with a random generator seeded by `seed` and the row's index, so a rerun scores
  the same. Such rows are marked `judge-random` in predictions.jsonl.
Uses urllib: no extra dependency.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request

from mmtune.data.choices import has_chinese
from mmtune.errors import MmtuneError
from mmtune.eval import match_vlmevalkit
from mmtune.eval.extract import Extraction
from mmtune.eval.tsv import EvalItem

TRIES = 3
# The judge prompts of VLMEvalKit (vlmeval/dataset/utils/multiple_choice.py, build_prompt and
# build_prompt_cn at the release named in match_vlmevalkit.py): the same text, so the same judge
# model decides the same way.
PROMPT_EN = (
    'You are an AI assistant who will help me to match '
    'an answer with several options of a single-choice question. '
    'You are provided with a question, several options, and an answer, '
    'and you need to find which option is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Z. '
    'Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n'
    'Example 1: \n'
    'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
    'Answer: a cute teddy bear\nYour output: A\n'
    'Example 2: \n'
    'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
    'Answer: Spider\nYour output: Z\n'
    'Example 3: \n'
    'Question: {}?\nOptions: {}\nAnswer: {}\nYour output: '
)
PROMPT_ZH = (
    '你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。'
    '你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。'
    '如果所有选项的意义都与答案显著不同，则输出 Z。'
    '你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。'
    '例 1:'
    '问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n'
    '例 2: \n'
    '问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n'
    '例 3: \n'
    '问题: {}?\n选项: {}\n答案: {}\n输出: '
)


def judge_prompt(item: EvalItem, answer: str) -> str:
    """VLMEvalKit's judge prompt for `item` (the question column only; no hint)."""
    options = "There are several options: \n" + "".join(f"{k}. {v}\n" for k, v in item.options.items())
    template = PROMPT_ZH if has_chinese(item.question) else PROMPT_EN
    return template.format(item.question, options, answer)


def random_choice(item: EvalItem, seed: int) -> Extraction:
    """VLMEvalKit's fallback after 3 failed tries: a random option or Z, here seeded per row."""
    pick = random.Random(f"{seed}:{item.index}").choice([*item.options, "Z"])
    return Extraction(None if pick == "Z" else pick, "judge-random")


def api_base(url: str) -> str:
    """The server root: "http://h:8000", "http://h:8000/v1" and ".../v1/chat/completions" all give "http://h:8000"."""
    base = url.strip().rstrip("/")
    for tail in ("/chat/completions", "/v1"):
        if base.endswith(tail):
            base = base[: -len(tail)]
    if not base.startswith(("http://", "https://")):
        raise MmtuneError(f"--judge {url!r} is not an http(s) URL", hint="e.g. --judge http://127.0.0.1:8000")
    return base


class Judge:
    """Callable `judge(item, answer) -> Extraction` (method "judge", or "judge-random" after 3 tries)."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 2, seed: int = 0):
        self.base = api_base(url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.retries, self.seed = timeout, retries, seed
        self.model = model or self._first_model() or "default"
        self.calls = 0
    def _request(self, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers,
                                         method="POST" if body is not None else "GET")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:200]
                if e.code < 500 or attempt == self.retries:
                    raise MmtuneError(f"judge {self.base}{path} answered HTTP {e.code}: {detail}",
                                      hint="check --judge URL and --judge-model") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    reason = getattr(e, "reason", e)
                    raise MmtuneError(f"judge {self.base} cannot be reached: {reason}",
                                      hint="is the server running? check --judge URL") from None
            except json.JSONDecodeError:
                raise MmtuneError(f"judge {self.base}{path} did not answer JSON",
                                  hint="--judge must be an OpenAI-compatible server") from None
            time.sleep(min(2.0 ** attempt, 8.0))
        raise AssertionError("unreachable")

    def _first_model(self) -> str | None:
        try:
            models = self._request("/v1/models").get("data") or []
        except MmtuneError:
            return None
        return models[0].get("id") if models and isinstance(models[0], dict) else None

    def ask(self, prompt: str, temperature: float = 0.0) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": temperature,
                "max_tokens": 16}
        self.calls += 1
        reply = self._request("/v1/chat/completions", body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise MmtuneError(f"judge {self.base} answered without choices[0].message.content",
                              hint="--judge must be an OpenAI-compatible chat endpoint") from None

    def __call__(self, item: EvalItem, answer: str) -> Extraction:
        prompt = judge_prompt(item, answer)
        for _ in range(TRIES):
            reply = self.ask(prompt)
            if match_vlmevalkit.API_FAILURE in reply:
                continue
            letter = match_vlmevalkit.infer(reply, dict(item.options))
            if letter:
                return Extraction(letter if letter in item.options else None, "judge")
        return random_choice(item, self.seed)
