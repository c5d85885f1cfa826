"""Shapes: a synthetic vision-language dataset small enough for a tiny model to learn on a CPU.

Each image shows 1-3 shapes of one kind and one colour (circle, square, triangle, star, diamond;
red, green, blue, yellow, purple, orange) on a plain or noisy grey background; a single shape sits
on the left, right, top, bottom or in the center. Images are PNGs of `size`×`size` pixels (64 by
default: small enough for a tiny vision tower, big enough to tell a star from a circle).

    make_shapes_dataset("data/shapes", n=200, seed=0)

writes, with image paths relative to the output folder (so `--image-folder data/shapes`):

    images/train_00000.png ...    training images; images/heldout_00000.png ... held-out images
    pretrain.json                 LLaVA captions: "<image>\\nDescribe the image briefly." -> "A red circle on the left."
    finetune.json                 LLaVA Q&A, single- and multi-turn, with some text-only records mixed in
    finetune_minicpm.json         MiniCPM-V format, incl. two-image comparisons ({"<image_00>": ..., "<image_01>": ...})
    heldout.json                  LLaVA format, one question per held-out image (and a "category" key)
    mmbench_dev.tsv               MMBench-format multiple choice on held-out images, with `answer`
    mmbench_test.tsv              the same for other held-out images, without `answer`

Answers are short and always the same for the same fact ("A red circle on the left.", "Red.",
"Two.", "On the left.", "Yes."), so a tiny model can learn them. Everything is a function of
(n, seed, size, heldout_fraction): the same arguments give byte-identical files.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from mmtune.errors import MmtuneError

SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230),
           "yellow": (240, 210, 30), "purple": (150, 60, 190), "orange": (245, 140, 30)}
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS = (255, 205, 70)  # grey levels: white, light grey, dark grey
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "center": "in the center"}

QUESTIONS = {
    "shape": ["What shape is in the image?", "What shape do you see?", "Which shape is shown in the picture?",
              "Name the shape in the image.", "What kind of shape is this?"],
    "colour": ["What colour is the shape?", "What color is the shape?", "Which colour is the shape in the image?",
               "What is the colour of the shape?", "Tell me the colour of the shape."],
    "count": ["How many shapes are there?", "How many shapes are in the image?", "Count the shapes in the picture.",
              "How many objects do you see?", "What is the number of shapes?"],
    "position": ["Where is the shape?", "Where is the shape located?", "In which part of the image is the shape?",
                 "Where in the picture is the shape?"],
    "existence": ["Is there a {colour} shape in the image?", "Do you see a {colour} shape?", "Is the shape {colour}?"],
    "caption": ["Describe the image briefly.", "What is in the image?", "Give a short description of the picture.",
                "Describe what you see."],
}
CAPTION_REQUESTS = ["Give a short caption of the image.", "Describe the image briefly.",
                    "Write a caption for this picture.", "What does the image show?",
                    "Summarize the picture in a few words.", "Provide a brief description of the image."]
COMPARISONS = {
    "same_shape": ["Do the two images show the same shape?", "Is the shape in both images the same?"],
    "same_colour": ["Are the shapes in the two images the same colour?", "Do both images have the same colour?"],
    "more": ["Which image has more shapes?", "Which of the two images shows more shapes?"],
}
TEXT_QA = [
    ("How many sides does a triangle have?", "Three."),
    ("How many sides does a square have?", "Four."),
    ("How many points does a star have?", "Five."),
    ("Which shape has no corners?", "A circle."),
    ("Name a shape with four equal sides.", "A square."),
    ("What colour do you get by mixing blue and yellow?", "Green."),
    ("What colour do you get by mixing red and yellow?", "Orange."),
    ("What colour do you get by mixing red and blue?", "Purple."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("Hello!", "Hello! Show me an image and I will tell you about its shapes."),
    ("What can you do?", "I can tell the shape, colour, number and position of shapes in an image."),
]
# Chinese: shape and colour questions (the kinds a mixed-language task asks), answers and option texts
SHAPES_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "diamond": "菱形"}
COLOURS_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"}
QUESTIONS_ZH = {
    "shape": ["图中是什么形状？", "图片里有什么形状？", "这是什么形状？", "请说出图中的形状。"],
    "colour": ["这个形状是什么颜色？", "图中形状是什么颜色的？", "图片里的形状是什么颜色？", "请说出形状的颜色。"],
}
LANGS = ("en", "zh")
MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
L2_CATEGORY = {"shape": "attribute_recognition", "colour": "attribute_recognition", "count": "object_counting",
               "position": "object_localization", "existence": "existence"}


@dataclass(frozen=True)
class Scene:
    """What one image shows."""

    shape: str
    colour: str
    count: int
    position: str | None  # where a single shape sits; None for 2-3 shapes
    background: int  # grey level 0-255
    noisy: bool

    @property
    def categories(self) -> list[str]:
        """The question kinds this image can answer."""
        kinds = ["shape", "colour", "count", "existence"]
        return kinds + ["position"] if self.position else kinds

    def asked(self, questions: tuple[str, ...] | None) -> list[str]:
        """The kinds this image can answer, limited to `questions` (None: all)."""
        return [k for k in self.categories if questions is None or k in questions]


@dataclass
class ShapesDataset:
    """What `make_shapes_dataset` wrote."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # name ("pretrain", ...) -> path
    records: dict[str, int] = field(default_factory=dict)  # name -> records / rows written
    n_train_images: int = 0
    n_heldout_images: int = 0


# ------------------------------------------------------------------------------------------ answers

def plural(shape: str) -> str:
    return shape + "s"


def caption(scene: Scene) -> str:
    if scene.count == 1:
        return f"A {scene.colour} {scene.shape} {WHERE[scene.position]}."
    return f"{COUNT_WORDS[scene.count].capitalize()} {scene.colour} {plural(scene.shape)}."


def answer(scene: Scene, kind: str, asked_colour: str | None = None) -> str:
    """The one answer to a question of `kind` about `scene`."""
    if kind == "shape":
        return f"A {scene.shape}." if scene.count == 1 else f"{plural(scene.shape).capitalize()}."
    if kind == "colour":
        return f"{scene.colour.capitalize()}."
    if kind == "count":
        return f"{COUNT_WORDS[scene.count].capitalize()}."
    if kind == "position":
        return f"{WHERE[scene.position].capitalize()}."
    if kind == "existence":
        return "Yes." if asked_colour == scene.colour else "No."
    if kind == "caption":
        return caption(scene)
    raise ValueError(f"unknown question kind {kind!r}")


def ask(scene: Scene, kind: str, rng: random.Random, lang: str = "en") -> tuple[str, str]:
    """A (question, answer) pair of `kind`, the phrasing picked by `rng`; in Chinese (`lang` "zh") for
    shape and colour questions."""
    if lang == "zh" and kind in QUESTIONS_ZH:
        name = SHAPES_ZH[scene.shape] if kind == "shape" else COLOURS_ZH[scene.colour]
        return rng.choice(QUESTIONS_ZH[kind]), f"{name}。"
    question = rng.choice(QUESTIONS[kind])
    colour = None
    if kind == "existence":  # half the time the true colour
        colour = scene.colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != scene.colour])
        question = question.format(colour=colour)
    return question, answer(scene, kind, colour)


# ------------------------------------------------------------------------------------------- images

def random_scene(rng: random.Random) -> Scene:
    count = rng.choice((1, 1, 2, 3))  # half the images hold one shape, so position questions are common
    return Scene(shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)), count=count,
                 position=rng.choice(POSITIONS) if count == 1 else None,
                 background=rng.choice(BACKGROUNDS), noisy=rng.random() < 0.5)


def draw_scene(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """The scene as a size×size RGB image (positions jittered and noise drawn with `rng`)."""
    if scene.noisy:  # grey noise of ±40 levels around the background
        noise = Image.frombytes("L", (size, size), rng.randbytes(size * size))
        bg = scene.background
        img = noise.point(lambda v: max(0, min(255, bg + (v - 128) * 40 // 128))).convert("RGB")
    else:
        img = Image.new("RGB", (size, size), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    if scene.count == 1:
        fx, fy = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
                  "center": (0.5, 0.5)}[scene.position]
        centres, radius, jitter = [(fx, fy)], 0.15 * size, 0.04 * size
    else:  # distinct cells of a 3×3 grid, so shapes never overlap
        cells = rng.sample(range(9), scene.count)
        centres = [((c % 3 * 2 + 1) / 6, (c // 3 * 2 + 1) / 6) for c in cells]
        radius, jitter = 0.12 * size, 0.03 * size
    for fx, fy in centres:
        cx = fx * size + rng.uniform(-jitter, jitter)
        cy = fy * size + rng.uniform(-jitter, jitter)
        draw_shape(draw, scene.shape, cx, cy, radius, COLOURS[scene.colour])
    return img


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = 0.85 * r
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - 0.95 * r, cy + 0.8 * r), (cx + 0.95 * r, cy + 0.8 * r)], fill=fill)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


# ------------------------------------------------------------------------------------------ records

def user_turn(question: str, rng: random.Random, placeholder: str = "<image>") -> str:
    """The first user message: the image before the question (mostly) or after it."""
    return f"{placeholder}\n{question}" if rng.random() < 0.8 else f"{question}\n{placeholder}"


def llava_record(id: str, image: str | None, turns: list[tuple[str, str]]) -> dict:
    record: dict = {"id": id}
    if image is not None:
        record["image"] = image
    record["conversations"] = [{"from": who, "value": text}
                               for q, a in turns for who, text in (("human", q), ("gpt", a))]
    return record


def minicpm_record(id: str, image: str | dict, turns: list[tuple[str, str]]) -> dict:
    return {"id": id, "image": image,
            "conversations": [{"role": who, "content": text}
                              for q, a in turns for who, text in (("user", q), ("assistant", a))]}


def pretrain_records(train: list[tuple[str, Scene]], rng: random.Random) -> list[dict]:
    return [llava_record(f"pretrain_{i}", path, [(user_turn(rng.choice(CAPTION_REQUESTS), rng), caption(scene))])
            for i, (path, scene) in enumerate(train)]


def finetune_records(train: list[tuple[str, Scene]], rng: random.Random,
                     questions: tuple[str, ...] | None = None) -> list[dict]:
    """Per image one single-turn and one multi-turn (2-3 questions) record; ~10% text-only records.
    With `questions` only those kinds are asked, two single-turn records per image."""
    records = []
    for path, scene in train:
        if questions is not None:
            kinds = scene.asked(questions)
            records += [llava_record("", path, [(user_turn(q, rng), a)])
                        for q, a in (ask(scene, rng.choice(kinds), rng) for _ in range(2))] if kinds else []
            continue
        kinds = scene.categories + ["caption"]
        q, a = ask(scene, rng.choice(kinds), rng)
        records.append(llava_record("", path, [(user_turn(q, rng), a)]))
        turns = [ask(scene, kind, rng) for kind in rng.sample(kinds, rng.choice((2, 3)))]
        turns[0] = (user_turn(turns[0][0], rng), turns[0][1])
        records.append(llava_record("", path, turns))
    text_only = [rng.choice(TEXT_QA) for _ in range(max(1, len(records) // 10))] if questions is None else []
    records += [llava_record("", None, [qa]) for qa in text_only]
    rng.shuffle(records)
    for i, record in enumerate(records):
        record["id"] = f"finetune_{i}"
    return records


def minicpm_records(train: list[tuple[str, Scene]], rng: random.Random) -> list[dict]:
    """One single-image record per image, plus one two-image comparison per two images."""
    records = []
    for path, scene in train:
        q, a = ask(scene, rng.choice(scene.categories + ["caption"]), rng)
        records.append(minicpm_record("", path, [(user_turn(q, rng), a)]))
    for _ in range(len(train) // 2):
        (path_a, a), (path_b, b) = pick_pair(train, rng)
        kind = rng.choice(list(COMPARISONS))
        if kind == "same_shape":
            reply = "Yes." if a.shape == b.shape else "No."
        elif kind == "same_colour":
            reply = "Yes." if a.colour == b.colour else "No."
        else:
            reply = ("The first image." if a.count > b.count else "The second image." if b.count > a.count
                     else "They have the same number.")
        question = f"<image_00>\n<image_01>\n{rng.choice(COMPARISONS[kind])}"
        records.append(minicpm_record("", {"<image_00>": path_a, "<image_01>": path_b}, [(question, reply)]))
    rng.shuffle(records)
    for i, record in enumerate(records):
        record["id"] = f"minicpm_{i}"
    return records


def pick_pair(train: list[tuple[str, Scene]], rng: random.Random) -> tuple[tuple[str, Scene], tuple[str, Scene]]:
    """Two different images; half the time with the same shape (when there is one), so "Yes." is common."""
    i = rng.randrange(len(train))
    same = [j for j, (_, s) in enumerate(train) if j != i and s.shape == train[i][1].shape]
    if same and rng.random() < 0.5:
        j = rng.choice(same)
    else:
        j = rng.choice([j for j in range(len(train)) if j != i])
    return train[i], train[j]


def choice_question(scene: Scene, kind: str, rng: random.Random, lang: str = "en") -> tuple[str, dict, str]:
    """(question, {letter: option}, correct letter): a shape or colour question with 2-4 options, as
    MMBench asks it."""
    names = SHAPES_ZH if kind == "shape" else COLOURS_ZH
    choices = list(SHAPES) if kind == "shape" else list(COLOURS)
    correct = getattr(scene, kind)
    picked = [correct] + rng.sample([c for c in choices if c != correct], rng.randint(1, 3))
    rng.shuffle(picked)
    options = {"ABCD"[k]: (names[c] if lang == "zh" else c) for k, c in enumerate(picked)}
    if lang == "zh":
        question = QUESTIONS_ZH[kind][0]
    else:
        question = {"shape": "What shape is in the image?", "colour": "What colour is the shape?"}[kind]
    return question, options, "ABCD"[picked.index(correct)]


def mixed_records(train: list[tuple[str, Scene]], rng: random.Random, questions: tuple[str, ...],
                  langs: tuple[str, ...]) -> list[dict]:
    """Per image two open questions and one multiple-choice question (2-4 options, written as
    evaluation asks MMBench: options, then the instruction; the answer its letter), each in a language
    of `langs` (Chinese for shape and colour)."""
    from mmtune.data.choices import build_prompt

    records = []
    for path, scene in train:
        kinds = scene.asked(questions)
        for _ in range(2):
            q, a = ask(scene, rng.choice(kinds), rng, rng.choice(langs))
            records.append(llava_record("", path, [(user_turn(q, rng), a)]))
        choice_kinds = [k for k in kinds if k in QUESTIONS_ZH]
        if choice_kinds:
            lang = rng.choice(langs)
            question, options, letter = choice_question(scene, rng.choice(choice_kinds), rng, lang)
            records.append(llava_record("", path, [(f"<image>\n{build_prompt(question, options)}", letter)]))
    rng.shuffle(records)
    for i, record in enumerate(records):
        record["id"] = f"finetune_{i}"
    return records


def heldout_records(heldout: list[tuple[str, Scene]], rng: random.Random,
                    questions: tuple[str, ...] | None = None, langs: tuple[str, ...] = ("en",)) -> list[dict]:
    """One question per held-out image, the kinds (and languages) taken in turn so every kind is asked."""
    records = []
    for i, (path, scene) in enumerate(heldout):
        kinds = scene.asked(questions)
        if not kinds:
            continue
        kind = kinds[i % len(kinds)]
        q, a = ask(scene, kind, rng, langs[(i // len(kinds)) % len(langs)])
        record = llava_record(f"heldout_{i}", path, [(f"<image>\n{q}", a)])
        record["category"] = kind
        records.append(record)
    return records


def mmbench_rows(heldout: list[tuple[str, Scene]], folder: Path, rng: random.Random,
                 questions: tuple[str, ...] | None = None, mixed_langs: tuple[str, ...] | None = None) -> list[dict]:
    """One multiple-choice row per (image, question kind): 4 options for shape/colour/position,
    3 for count, 2 (yes/no) for existence. With `mixed_langs`, shape and colour rows have 2-4 options
    and are asked in those languages in turn (the mixed task)."""
    rows = []
    for path, scene in heldout:
        image = base64.b64encode((folder / path).read_bytes()).decode("ascii")
        for kind in scene.asked(questions):
            if mixed_langs and kind in QUESTIONS_ZH:
                lang = mixed_langs[len(rows) % len(mixed_langs)]
                question, choices, letter = choice_question(scene, kind, rng, lang)
                row = {"index": len(rows), "question": question, "hint": ""}
                row.update({k: choices.get(k, "") for k in "ABCD"})
                row.update({"answer": letter, "category": kind, "l2-category": L2_CATEGORY[kind], "image": image})
                rows.append(row)
                continue
            if kind == "existence":
                colour = scene.colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != scene.colour])
                question, options = f"Is there a {colour} shape in the image?", ["yes", "no"]
                correct = "yes" if colour == scene.colour else "no"
            elif kind == "count":
                question, options, correct = "How many shapes are there?", ["one", "two", "three"], \
                    COUNT_WORDS[scene.count]
            else:
                question = {"shape": "What shape is in the image?", "colour": "What colour is the shape?",
                            "position": "Where is the shape?"}[kind]
                choices = {"shape": SHAPES, "colour": tuple(COLOURS), "position": POSITIONS}[kind]
                correct = getattr(scene, kind)
                options = [correct] + rng.sample([c for c in choices if c != correct], 3)
                rng.shuffle(options)
            letters = "ABCD"
            row = {"index": len(rows), "question": question, "hint": ""}
            row.update({letters[k]: options[k] if k < len(options) else "" for k in range(4)})
            row.update({"answer": letters[options.index(correct)], "category": kind,
                        "l2-category": L2_CATEGORY[kind], "image": image})
            rows.append(row)
    return rows


def write_tsv(rows: list[dict], path: Path, with_answer: bool) -> None:
    columns = [c for c in MMBENCH_COLUMNS if with_answer or c != "answer"]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])


def write_json(records: list[dict], path: Path) -> None:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ dataset

def make_shapes_dataset(out_dir: str | Path, n: int = 200, seed: int = 0, size: int = 64,
                        heldout_fraction: float = 0.2, questions: list[str] | None = None,
                        choices: bool = False, langs: tuple[str, ...] = ("en",)) -> ShapesDataset:
    """Draw `n` images (a `heldout_fraction` of them held out, at least 2) and write the files above.

    `questions` limits the fine-tune, held-out and MMBench questions to some kinds (e.g. ["colour"]):
    finetune.json then holds two single-turn questions per image and no captions or text-only records,
    a curriculum a tiny model learns within a CPU budget (the full mix needs far more steps).
    `choices` (with `questions`) adds one MMBench-style multiple-choice question (2-4 options) per
    training image and makes the MMBench files' shape and colour rows 2-4 options; `langs` ("en",
    "zh") asks shape and colour questions in those languages (the mixed task)."""
    unknown_langs = sorted(set(langs) - set(LANGS))
    if unknown_langs or not langs:
        raise MmtuneError(f"unknown language(s) {', '.join(unknown_langs) or '(none given)'}; choose from {', '.join(LANGS)}")
    if choices and questions is None:
        raise MmtuneError("--choices needs --questions (e.g. --questions colour,shape)")
    langs = tuple(langs)
    if questions is not None:
        unknown = sorted(set(questions) - set(L2_CATEGORY))
        if unknown or not questions:
            raise MmtuneError(f"unknown question kind(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(L2_CATEGORY)}")
        questions = tuple(questions)
    if n < 4:
        raise MmtuneError(f"--n must be at least 4 (2 training and 2 held-out images), got {n}")
    if size < 16:
        raise MmtuneError(f"--size must be at least 16 pixels, got {size}")
    if not 0 < heldout_fraction < 1:
        raise MmtuneError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
    n_heldout = min(n - 2, max(2, round(n * heldout_fraction)))
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    # Separate streams, so that changing how one file is written leaves the others as they were.
    def stream(name: str) -> random.Random:
        return random.Random(f"shapes:{seed}:{name}")

    scene_rng, draw_rng = stream("scenes"), stream("draw")
    train: list[tuple[str, Scene]] = []
    heldout: list[tuple[str, Scene]] = []
    for i in range(n):
        scene = random_scene(scene_rng)
        split, k = ("train", i) if i < n - n_heldout else ("heldout", i - (n - n_heldout))
        rel = f"images/{split}_{k:05d}.png"
        draw_scene(scene, size, draw_rng).save(out / rel, format="PNG")
        (train if split == "train" else heldout).append((rel, scene))

    result = ShapesDataset(out, n_train_images=len(train), n_heldout_images=len(heldout))
    half = math.ceil(len(heldout) / 2)
    outputs = {
        "pretrain": pretrain_records(train, stream("pretrain")),
        "finetune": (mixed_records(train, stream("finetune"), questions, langs)
                     if choices or langs != ("en",) else finetune_records(train, stream("finetune"), questions)),
        "finetune_minicpm": minicpm_records(train, stream("minicpm")),
        "heldout": heldout_records(heldout, stream("heldout"), questions, langs),
    }
    for name, records in outputs.items():
        path = out / f"{name}.json"
        write_json(records, path)
        result.files[name], result.records[name] = path, len(records)
    mmbench_rng = stream("mmbench")
    for name, images, with_answer in (("mmbench_dev", heldout[:half], True), ("mmbench_test", heldout[half:], False)):
        rows = mmbench_rows(images, out, mmbench_rng, questions, langs if choices else None)
        path = out / f"{name}.tsv"
        write_tsv(rows, path, with_answer)
        result.files[name], result.records[name] = path, len(rows)
    return result
