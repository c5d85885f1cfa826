"""A small tool-use dataset for demos and tests: a weather lookup, a calculator and a unit converter,
asked in varied phrasings, with some questions that need no tool.

Every conversation is user -> assistant tool call -> tool result -> assistant answer (or, with no
tool needed, user -> answer). Tool results are computed (the calculator and the converter are
right; the weather is made up but fixed per city). Held-out conversations use cities, numbers and
some phrasings that training never shows, so a model that learned to fill arguments from the
question, not to recall them, calls the right tool with the right arguments on them.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from mmtune.data.conversation import Conversation, Message, ToolCall

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "calculate", "description": "Do one arithmetic operation on two numbers",
        "parameters": {"type": "object", "properties": {
            "operation": {"type": "string", "enum": ["add", "subtract", "multiply", "divide"]},
            "a": {"type": "number"}, "b": {"type": "number"}}, "required": ["operation", "a", "b"]}}},
    {"type": "function", "function": {
        "name": "convert_units", "description": "Convert a length or a weight between units",
        "parameters": {"type": "object", "properties": {
            "value": {"type": "number"}, "from_unit": {"type": "string", "enum": ["km", "mi", "kg", "lb"]},
            "to_unit": {"type": "string", "enum": ["km", "mi", "kg", "lb"]}},
            "required": ["value", "from_unit", "to_unit"]}}},
]

# Made-up city names take every letter shape (any first letter, vowel-first, two-letter onsets and
# codas), so what a model learns from them is to copy the name it is asked about, whatever its
# letters, not a small set of syllables it could recall.
ONSETS = [*"bcdfghjklmnpqrstvwxyz", "ch", "sh", "th", "qu", "br", "cr", "dr", "gr", "tr", "bl", "pl", "st", "sk", "sw"]
VOWELS = [*"aeiouy", "ai", "au", "ea", "ee", "ie", "oa", "ou"]
CODAS = [*"bdgklmnprstxz", "ng", "nd", "nt", "st", "rk", "ck", "ch", "sh", "ll"]
TRAIN_CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Lisbon", "Vienna", "Prague", "Dublin", "Oslo", "Helsinki",
                "Warsaw", "Athens", "Cairo", "Lagos", "Nairobi", "Tokyo", "Seoul", "Beijing", "Delhi", "Sydney",
                "Toronto", "Chicago", "Boston", "Denver", "Lima", "Bogota", "Santiago", "Havana", "Manila", "Hanoi"]
HELDOUT_CITIES = ["London", "Moscow", "Istanbul", "Dubai", "Mumbai", "Bangkok", "Jakarta", "Shanghai", "Osaka",
                  "Melbourne", "Vancouver", "Seattle", "Austin", "Quito", "Caracas", "Dakar", "Tunis", "Riga",
                  "Zurich", "Geneva"]
WEATHER_ASKS = {"train": ["What is the weather in {city}?", "How is the weather in {city} today?",
                          "Is it cold in {city} right now?", "Tell me the weather for {city}.",
                          "weather {city}", "Do I need an umbrella in {city}?", "What's it like outside in {city}?",
                          "Will it rain in {city} tomorrow?", "What's the forecast for {city}?",
                          "Give me the temperature in {city}.", "How sunny is {city} now?"],
                "heldout": ["What is the weather in {city}?", "Could you check the weather in {city}?",
                            "How warm is it in {city}?"]}
OPS = {"add": ("plus", "+"), "subtract": ("minus", "-"), "multiply": ("times", "*"), "divide": ("divided by", "/")}
CALC_ASKS = {"train": ["What is {a} {word} {b}?", "Compute {a} {sign} {b}.", "calculate {a} {sign} {b}",
                       "How much is {a} {word} {b}?", "Please work out {a} {word} {b}.", "{a} {sign} {b} = ?",
                       "What do you get for {a} {sign} {b}?", "I need {a} {word} {b}."],
             "heldout": ["What is {a} {word} {b}?", "Can you tell me {a} {sign} {b}?", "Quick: {a} {word} {b}?"]}
UNITS = {("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623, ("lb", "kg"): 0.453592}
UNIT_WORDS = {"km": "kilometers", "mi": "miles", "kg": "kilograms", "lb": "pounds"}
# Half the training phrasings name the target unit first, so the unit that follows the number (the one
# to convert from) is what marks `from_unit`, not the order of the words.
CONVERT_ASKS = {"train": ["Convert {v} {f} to {t}.", "How many {tw} is {v} {fw}?", "What is {v} {fw} in {tw}?",
                          "{v} {f} in {t} please", "How many {tw} in {v} {fw}?", "Give me {t} for {v} {f}."],
                "heldout": ["Convert {v} {f} to {t}.", "How many {tw} are there in {v} {fw}?"]}
# Training asks are sometimes wrapped in words that do not change what is asked, so the tool is chosen by
# what the question holds (a city, two numbers and an operation, a value and units), not by its first
# words; held-out asks are never wrapped (their phrasings are what is new).
WRAPPERS = ["Hey, {ask}", "Please, {ask}", "{ask} Thanks!", "Hello! {ask}", "One question: {ask}",
            "{ask} I need to know.", "So, {ask}", "Okay. {ask}", "{ask} Thank you."]
# Questions that need no tool: an opening and an ending per kind, combined; held-out questions are
# combinations training never shows (chosen by a stable hash), so "no tool" must be learned as a kind.
NO_TOOL_KINDS = {
    "greet": (["Hi", "Hello", "Hey", "Good morning", "Good evening", "Hi there", "Hello again", "Hey there"],
              ["!", ".", ", how are you?", ", nice to meet you.", " :)", ", anyone here?"],
              "Hello! I can look up the weather, do arithmetic and convert units. How can I help?"),
    "thanks": (["Thanks", "Thank you", "Many thanks", "Thanks a lot", "Cheers", "Thank you so much"],
               ["!", ".", " for the help.", ", that was useful.", ", great."],
               "You're welcome!"),
    "bye": (["Bye", "Goodbye", "See you", "Good night", "See you later", "Farewell"],
            ["!", ".", " for now.", ", take care.", ", have a nice day."],
            "Goodbye! Have a nice day."),
    "about": (["What can you do", "Who are you", "What are you", "How can you help me", "What are your tools",
               "Tell me about yourself"],
              ["?", " exactly?", " today?", ", in short?", " please?"],
              "I am an assistant with three tools: weather, calculator and unit conversion."),
}


def _no_tool_split(opening: str, ending: str) -> str:
    return "heldout" if zlib.crc32(f"{opening}|{ending}".encode()) % 4 == 0 else "train"


CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy"]


def _number(rng: random.Random, split: str) -> int:
    # Held-out numbers are ones training never shows (every fifth number, 2-999), so the model must
    # copy them from the question, not recall them; each digit still appears everywhere in training.
    while True:
        n = rng.randint(2, 999)
        if (n % 5 == 3) == (split == "heldout"):
            return n


def _made_up_city(rng: random.Random) -> str:
    def pick(options: list[str], single: float) -> str:  # one letter mostly, two now and then
        one_letter = rng.random() < single
        return rng.choice([o for o in options if (len(o) == 1) == one_letter])

    def syllable(first: bool) -> str:
        onset = "" if first and rng.random() < 0.2 else pick(ONSETS, 0.75)
        return onset + pick(VOWELS, 0.85) + (pick(CODAS, 0.75) if rng.random() < 0.3 else "")

    return "".join(syllable(i == 0) for i in range(rng.randint(2, 3))).capitalize()


def _city(rng: random.Random, split: str) -> str:
    """Training mixes real cities with made-up names (each seen rarely, so the model learns to copy the
    name from the question); held-out cities are real ones training never names, or made-up ones
    of another seed (a made-up training name is never a held-out one: different syllable counts aside,
    the split's random stream differs)."""
    if rng.random() < 0.5:
        return rng.choice(TRAIN_CITIES if split == "train" else HELDOUT_CITIES)
    return _made_up_city(rng)


def _ask(rng: random.Random, split: str, asks: dict[str, list[str]], **values) -> str:
    ask = rng.choice(asks[split]).format(**values)
    if split != "train" or rng.random() >= 0.3:
        return ask
    wrapper = rng.choice(WRAPPERS)
    return wrapper.format(ask=ask if wrapper.startswith("{") else ask[0].lower() + ask[1:])


def _weather(rng: random.Random, split: str) -> Conversation:
    city = _city(rng, split)
    temp = sum(map(ord, city)) % 35 - 5
    condition = CONDITIONS[len(city) % len(CONDITIONS)]
    return _with_call(_ask(rng, split, WEATHER_ASKS, city=city), ToolCall("get_weather", {"city": city}),
                      f'{{"city": "{city}", "temperature_c": {temp}, "condition": "{condition}"}}',
                      f"In {city} it is {temp} °C and {condition}.")


def _calc(rng: random.Random, split: str) -> Conversation:
    op = rng.choice(list(OPS))
    a, b = _number(rng, split), _number(rng, split)
    result = {"add": a + b, "subtract": a - b, "multiply": a * b, "divide": round(a / b, 4)}[op]
    word, sign = OPS[op]
    ask = _ask(rng, split, CALC_ASKS, a=a, b=b, word=word, sign=sign)
    return _with_call(ask, ToolCall("calculate", {"operation": op, "a": a, "b": b}), f'{{"result": {result}}}',
                      f"{a} {word} {b} is {result}.")


def _convert(rng: random.Random, split: str) -> Conversation:
    (f, t), factor = rng.choice(list(UNITS.items()))
    v = _number(rng, split)
    result = round(v * factor, 2)
    ask = _ask(rng, split, CONVERT_ASKS, v=v, f=f, t=t, fw=UNIT_WORDS[f], tw=UNIT_WORDS[t])
    return _with_call(ask, ToolCall("convert_units", {"value": v, "from_unit": f, "to_unit": t}),
                      f'{{"result": {result}}}', f"{v} {f} is {result} {t}.")


def _with_call(ask: str, call: ToolCall, result: str, answer: str) -> Conversation:
    return Conversation([Message("user", ask), Message("assistant", "", tool_calls=[call]), Message("tool", result),
                         Message("assistant", answer)], tools=list(TOOLS))


def _no_tool(rng: random.Random, split: str) -> Conversation:
    openings, endings, answer = NO_TOOL_KINDS[rng.choice(list(NO_TOOL_KINDS))]
    while True:
        opening, ending = rng.choice(openings), rng.choice(endings)
        if _no_tool_split(opening, ending) == split:
            return Conversation([Message("user", opening + ending), Message("assistant", answer)], tools=list(TOOLS))


KINDS = ((_weather, 0.35), (_calc, 0.25), (_convert, 0.2), (_no_tool, 0.2))


def _cities(conv: Conversation) -> set[str]:
    return {c.arguments["city"] for m in conv.messages for c in m.tool_calls if c.name == "get_weather"}


def make_tool_conversations(n: int, seed: int = 0, split: str = "train", avoid: set[str] = frozenset(),
                            max_rounds: int = 1) -> list[Conversation]:
    """`n` conversations of one split, each of 1 to `max_rounds` questions (a chat in which the user
    asks several things); none asks about a city in `avoid` (held-out: training's cities)."""
    rng = random.Random(f"{seed}:{split}")
    makers, weights = zip(*KINDS)
    out = []
    while len(out) < n:
        rounds = [rng.choices(makers, weights)[0](rng, split) for _ in range(rng.randint(1, max_rounds))]
        if not set().union(*map(_cities, rounds)) & avoid:
            out.append(Conversation([m for r in rounds for m in r.messages], tools=list(TOOLS)))
    return out


@dataclass
class ToolDataset:
    files: dict[str, Path]
    records: dict[str, int]


def make_tool_dataset(out: str | Path, n: int = 400, seed: int = 0, heldout: int | None = None,
                      max_rounds: int = 3) -> ToolDataset:
    """train.jsonl (n conversations of 1 to `max_rounds` questions), heldout.jsonl (one question
    each: new cities, numbers, phrasings) as OpenAI messages with tools, and tools.json (the
    definitions, for `mmtune chat --tools`)."""
    import json

    from mmtune.data.synth import write_conversations

    out = Path(out)
    heldout = heldout if heldout is not None else max(20, n // 5)
    train = make_tool_conversations(n, seed, "train", max_rounds=max_rounds)
    held = make_tool_conversations(heldout, seed, "heldout", avoid=set().union(*map(_cities, train)))
    files = {"train": write_conversations(train, out / "train.jsonl"),
             "heldout": write_conversations(held, out / "heldout.jsonl")}
    files["tools"] = out / "tools.json"
    files["tools"].write_text(json.dumps(TOOLS, indent=2) + "\n", encoding="utf-8")
    return ToolDataset(files, {"train": len(train), "heldout": len(held)})


def run_demo_tool(name: str, arguments: dict) -> str | None:
    """The result the generated data's tools give (for `mmtune chat --tools` without a real backend);
    None for a tool that is not one of them. Bad arguments give an error result, as a tool would."""
    import json

    try:
        if name == "get_weather":
            city = str(arguments["city"])
            temp = sum(map(ord, city)) % 35 - 5
            return json.dumps({"city": city, "temperature_c": temp, "condition": CONDITIONS[len(city) % len(CONDITIONS)]})
        if name == "calculate":
            a, b, op = float(arguments["a"]), float(arguments["b"]), arguments["operation"]
            result = {"add": a + b, "subtract": a - b, "multiply": a * b, "divide": round(a / b, 4) if b else None}[op]
            return json.dumps({"result": int(result) if isinstance(result, float) and result.is_integer() else result})
        if name == "convert_units":
            factor = UNITS[(arguments["from_unit"], arguments["to_unit"])]
            return json.dumps({"result": round(float(arguments["value"]) * factor, 2)})
    except (KeyError, TypeError, ValueError) as e:
        return json.dumps({"error": f"bad arguments for {name}: {e}"})
    return None
