"""Yes/no benchmarks (MME, POPE, HallusionBench and files in their layout) scored as VLMEvalKit scores
them (vlmeval/dataset/image_yorn.py and utils/yorn.py at the release named in match_vlmevalkit.py).

Columns: `index` (a number, or HallusionBench's `<category>_<subcategory>_<n>_<set>_<figure>_<question>`
text), `question`, `answer` ("Yes" / "No"), optional `category`, `l2-category`, `image_path` (MME:
the two questions about one image share it) and `image` (base64, or the index of the row holding it).
The question is asked as it is (VLMEvalKit adds nothing for these files).

An answer is "Yes" when, lower-cased with VLMEvalKit's punctuation handling, its words contain
"yes" and not "no"; "No" the other way round; else "Unknown" (wrong; `--judge` may be asked, with
VLMEvalKit's prompt, up to 5 times at temperature 0, 0.5, 1.0, ...).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mmtune.errors import DataError
from mmtune.eval.table import decode_image, read_table, require_columns, resolve_images, row_key

REQUIRED_COLUMNS = ("index", "question")
COLUMNS_HINT = "a yes/no TSV has index, question, answer (Yes/No), category, image"
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
MME_PERCEPTION = ("OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters",
                  "scene")
MME_COGNITION = ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation")
JUDGE_TRIES = 5
JUDGE_PROMPT = (  # VLMEvalKit's YOrN_match_prompt, the same text so a judge decides the same way
    'You are an AI assistant who will help me to match an answer with two options of a question. '
    'The options are only Yes / No. '
    'You are provided with a question and an answer, '
    'and you need to find which option (Yes / No) is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Unknown. '
    'Your should output a single word among the following 3 choices: Yes, No, Unknown.\n'
    'Example 1: \n'
    "Question: Is the word in this image 'Hello'?\nAnswer: The word in this image is 'Hello'.\nYour output: Yes\n"
    'Example 2: \n'
    "Question: Is the word in this image 'Hello'?\n"
    "Answer: The word in this image is not 'Hello'.\nYour output: No\n"
    'Example 3: \n'
    'Question: {}?\nAnswer: {}\nYour output: '
)


@dataclass
class YesNoItem:
    """One yes/no question; the same attributes an answerer reads from a multiple-choice item."""

    index: int | str
    question: str
    prompt: str
    answer: str | None
    category: str | None = None
    l2_category: str | None = None
    image_key: str = ""  # what groups MME's two questions about one image
    image_data: list[str] = field(default_factory=list, repr=False)
    row: dict = field(default_factory=dict, repr=False)
    where: str = ""

    @property
    def images(self) -> list:
        return [decode_image(data, f"{self.where}:image") for data in self.image_data]


def _index(value: str | None, where: str) -> int | str:
    if value is None:
        raise DataError("empty index", where=where)
    key = row_key(value)
    return int(key) if key.lstrip("-").isdigit() else key


def read_yes_no_tsv(path: str | Path) -> list[YesNoItem]:
    table = read_table(path)
    require_columns(table, REQUIRED_COLUMNS, COLUMNS_HINT)
    keys = [row_key(r["index"]) for r in table.rows]
    images = resolve_images(table, keys)
    items, seen = [], {}
    for i, (row, image) in enumerate(zip(table.rows, images)):
        index = _index(row["index"], table.where(i, "index"))
        if index in seen:
            raise DataError(f"index {index} also used by {table.where(seen[index])}", where=table.where(i, "index"))
        seen[index] = i
        if row.get("question") is None:
            raise DataError("empty question", where=table.where(i, "question"))
        answer = row.get("answer")
        if answer is not None and answer not in ("Yes", "No"):
            raise DataError(f"answer {answer!r} is not Yes or No", where=table.where(i, "answer"))
        image_key = row.get("image_path") or (hashlib.sha1(image[0].encode()).hexdigest() if image else "")
        items.append(YesNoItem(index=index, question=row["question"], prompt=row["question"], answer=answer,
                               category=row.get("category"), l2_category=row.get("l2-category"),
                               image_key=image_key, image_data=image,
                               row={k: v for k, v in row.items() if k != "image"}, where=table.where(i)))
    return items


def process_punctuation(text: str) -> str:
    """VLMEvalKit's `process_punctuation`, quirks included (only the first 32 lone periods go)."""
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_NUMBER.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, 32)


def extract_yes_no(answer) -> str:
    """"Yes", "No" or "Unknown", as VLMEvalKit's YOrN_Extraction (after its .xlsx read-back)."""
    from mmtune.eval.match_vlmevalkit import as_read_back

    words = process_punctuation(as_read_back(answer).lower()).split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "no" in words and "yes" not in words:
        return "No"
    return "Unknown"


def judge_yes_no(judge, item: YesNoItem, answer: str) -> str:
    """Ask the judge up to 5 times (temperature 0, 0.5, ...); "Unknown" when it never says Yes or No."""
    prompt = JUDGE_PROMPT.format(item.question, answer)
    for attempt in range(JUDGE_TRIES):
        verdict = extract_yes_no(judge.ask(prompt, temperature=0.5 * attempt))
        if verdict != "Unknown":
            return verdict
    return "Unknown"


# ----------------------------------------------------------------------------------- scores

def _mean(values) -> float:
    values = list(values)
    return 100 * sum(values) / len(values) if values else 0.0


def default_scores(items: list[YesNoItem], hits: dict) -> dict:
    """Accuracy overall, per category and per l2-category (in %)."""
    out = {"Overall": _mean(hits[it.index] for it in items)}
    for attr in ("category", "l2_category"):
        for name in sorted({getattr(it, attr) for it in items if getattr(it, attr)}):
            out[name] = _mean(hits[it.index] for it in items if getattr(it, attr) == name)
    return out


def mme_scores(items: list[YesNoItem], hits: dict) -> dict:
    """Per category: acc (per question) + acc+ (per image, both of its questions right), each in %,
    summed into the category score; perception and cognition ("reasoning" in VLMEvalKit) totals."""
    per: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        per[it.category or ""][it.image_key].append(bool(hits[it.index]))
    acc, acc_plus = {}, {}
    for category, images in per.items():
        single = [key for key, answers in images.items() if len(answers) < 2]
        if single:
            raise DataError(f"MME image {single[0]!r} of category {category!r} has one question; acc+ needs two",
                            hint="MME pairs a yes and a no question per image (rows sharing image_path)")
        acc[category] = _mean(a for answers in images.values() for a in answers)
        acc_plus[category] = _mean(answers[0] and answers[1] for answers in images.values())
    score = {c: acc[c] + acc_plus[c] for c in per}
    return {"perception": sum(score[c] for c in MME_PERCEPTION if c in score),
            "cognition": sum(score[c] for c in MME_COGNITION if c in score),
            "score": score, "acc": acc, "acc_plus": acc_plus,
            "missing_categories": [c for c in MME_PERCEPTION + MME_COGNITION if c not in score]}


def _f1(pairs: list[tuple[bool, bool]]) -> dict:
    tp = sum(1 for t, p in pairs if t and p)
    fp = sum(1 for t, p in pairs if not t and p)
    fn = sum(1 for t, p in pairs if t and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": 100 * f1, "precision": 100 * precision, "recall": 100 * recall}


def pope_scores(items: list[YesNoItem], extracted: dict, hits: dict) -> dict:
    """F1 ("Overall"), accuracy, precision and recall of "Yes", overall and per category; a row whose
    category lists several ("adversarial,popular") counts in each. "Unknown" counts as No."""
    rows = [(cat, it) for it in items for cat in ((it.category or "").split(",") if it.category else [None])]

    def block(selected):
        pairs = [(it.answer == "Yes", extracted[it.index] == "Yes") for _, it in selected]
        return {"Overall": _f1(pairs)["f1"], "acc": _mean(hits[it.index] for _, it in selected), **_f1(pairs)}

    out = {"Overall": block(rows)}
    for cat in sorted({c for c, _ in rows if c}):
        out[cat] = block([(c, it) for c, it in rows if c == cat])
    return out


def hallusion_scores(items: list[YesNoItem], hits: dict) -> dict:
    """aAcc (per question), fAcc (per figure: all its questions right), qAcc (per question across its
    figures), overall, per category and per l2-category; ids come from the index text."""
    def parts(it):
        bits = str(it.index).split("_")
        if len(bits) < 6:
            raise DataError(f"HallusionBench index {it.index!r} is not category_subcategory_n_set_figure_question",
                            where=it.where)
        return bits[3], bits[4], bits[5]

    def block(selected):
        figures, questions = defaultdict(list), defaultdict(list)
        for it in selected:
            set_id, figure_id, question_id = parts(it)
            figures[(it.l2_category, set_id, figure_id)].append(hits[it.index])
            questions[(it.l2_category, set_id, question_id)].append(hits[it.index])
        return {"aAcc": _mean(hits[it.index] for it in selected), "fAcc": _mean(all(v) for v in figures.values()),
                "qAcc": _mean(all(v) for v in questions.values())}

    out = {"Overall": block(items)}
    for attr in ("category", "l2_category"):
        for name in sorted({getattr(it, attr) for it in items if getattr(it, attr)}):
            out[name] = block([it for it in items if getattr(it, attr) == name])
    return out
