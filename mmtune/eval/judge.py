"""`--judge URL`: ask an LLM behind an OpenAI-compatible endpoint which option an unmatched answer means.

Only answers the rules of extract.py could not match are sent (`POST {URL}/v1/chat/completions`,
temperature 0). The judge's reply counts only when it names exactly one valid option letter; its
"Z" (none of them) leaves the answer unmatched. Uses urllib: no extra dependency.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from mmtune.errors import MmtuneError
from mmtune.eval.extract import UNMATCHED, Extraction, infer_option
from mmtune.eval.tsv import EvalItem

PROMPT = """You help grade a multiple-choice test. Given a question, its options and the answer someone \
gave in their own words, reply with the letter of the option the answer means. If the answer means none \
of the options, or more than one, reply Z. Reply with one letter and nothing else.

Question: What colour is the car?
Options:
A. red
B. green
C. blue
Answer: it looks crimson to me
Your reply: A

Question: What animal is shown?
Options:
A. horse
B. cow
C. sheep
D. goat
Answer: a bicycle
Your reply: Z

Question: {question}
Options:
{options}
Answer: {answer}
Your reply:"""


def judge_prompt(item: EvalItem, answer: str) -> str:
    question = f"{item.hint}\n{item.question}" if item.hint else item.question
    options = "\n".join(f"{k}. {v}" for k, v in item.options.items())
    return PROMPT.format(question=question, options=options, answer=answer.strip())


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
    """Callable `judge(item, answer) -> Extraction` (method "judge", or UNMATCHED)."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 2):
        self.base = api_base(url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.retries = timeout, retries
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

    def ask(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": 8}
        self.calls += 1
        reply = self._request("/v1/chat/completions", body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise MmtuneError(f"judge {self.base} answered without choices[0].message.content",
                              hint="--judge must be an OpenAI-compatible chat endpoint") from None

    def __call__(self, item: EvalItem, answer: str) -> Extraction:
        letter = infer_option(self.ask(judge_prompt(item, answer)), item.options)
        return Extraction(letter, "judge") if letter else UNMATCHED
