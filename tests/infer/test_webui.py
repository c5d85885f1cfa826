"""The web chat page (`mmtune serve --ui` / `mmtune webui`), end to end in headless Chromium.

The browser tests skip, saying why, when Playwright or a Chromium binary is missing; CI installs
both (Debian's `chromium`, PyPI's `playwright`; Playwright's own browser download is not used).
A screenshot of the chat is saved under test-artifacts/ (MMTUNE_TEST_ARTIFACTS overrides).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.load import load_for_inference
from mmtune.infer.server import ServerSettings, create_app
from mmtune.testing.serving import serve_in_thread
from mmtune.testing.runs import NAME, QUESTION, lora_run

ARTIFACTS = Path(os.environ.get("MMTUNE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "ui-key"


def chromium_path() -> str | None:
    return os.environ.get("MMTUNE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    recipe, result = lora_run()
    adapter = checkpoint_to_hf(recipe, result.final_dir, tmp_path_factory.mktemp("webui") / "adapter")
    return load_for_inference(recipe.model.path, adapter=str(adapter), device="cpu")


@pytest.fixture(scope="module")
def ui_server(loaded):
    # Each token takes >= 30 ms (a public forward hook), so the page visibly streams.
    model = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    handle = model.register_forward_pre_hook(lambda module, args: time.sleep(0.03))
    running = serve_in_thread(create_app(loaded, ServerSettings("zorblax", ui=True, api_key=KEY)))
    yield running
    running.stop()
    handle.remove()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def test_page_and_assets_are_served(ui_server, loaded):
    status, kind, html = get(ui_server.url + "/")
    assert status == 200 and kind.startswith("text/html") and 'src="/ui/app.js"' in html
    for asset, mime in (("app.js", "javascript"), ("style.css", "text/css")):
        status, kind, _ = get(f"{ui_server.url}/ui/{asset}")
        assert status == 200 and mime in kind
    status, _, config = get(ui_server.url + "/ui/config")
    assert json.loads(config) == {"model": "zorblax", "vision": False, "auth": True, "max_tokens": 512}
    plain = serve_in_thread(create_app(loaded, ServerSettings("zorblax")))  # without --ui: API only
    try:
        assert get(plain.url + "/")[0] == 404
    finally:
        plain.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = chromium_path()
    if not executable:
        pytest.skip("no chromium binary (apt-get install -y chromium, or set MMTUNE_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def open_page(browser, url: str, model: str, max_tokens: int):
    """The chat page, loaded and connected to `model`; fails the test on any page error."""
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_function(f"document.getElementById('model-name').textContent === '{model}'")
    page.fill("#max-tokens", str(max_tokens))
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture
def page(browser, ui_server):
    with open_page(browser, ui_server.url, "zorblax", 48) as page:  # short answers keep the test quick
        yield page


def set_range(page, selector: str, value: float) -> None:
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)


def ask(page, text: str) -> str:
    """Type a question, press Enter, wait for the answer; returns it. Records how the answer grew."""
    page.evaluate("""() => {
        window.__growth = [];
        new MutationObserver(() => {
            const last = [...document.querySelectorAll('#messages li.assistant .text')].pop();
            if (last) window.__growth.push(last.textContent.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    count = page.locator("li.assistant").count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    done = page.locator("li.assistant").nth(count)
    done.and_(page.locator("[data-state=done]")).wait_for(timeout=60_000)
    return done.locator(".text").inner_text()


def test_chat_streams_answer_multi_turn_and_clears(page):
    assert page.locator("#image-label").is_hidden()  # a text-only model: no image upload
    assert page.locator("#api-key").is_visible()  # the server wants a key
    page.fill("#api-key", KEY)
    set_range(page, "#temperature", 0)
    answer = ask(page, QUESTION)
    assert NAME in answer
    growth = [n for n in page.evaluate("window.__growth") if n > 0]
    assert len(set(growth)) > 2, f"the answer appeared at once, not streamed: {growth}"
    page.fill("#system", "You are a helpful assistant.")
    ask(page, "what is your name?")
    assert page.locator("#messages li").count() == 4  # two turns kept on screen and in the history
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-chat.png"))
    page.click("#clear")
    assert page.locator("#messages li").count() == 0
    assert NAME in ask(page, QUESTION)  # a fresh conversation answers like the first one


def test_errors_show_and_take_the_turn_back(page):
    page.fill("#api-key", "wrong")
    page.fill("#input", "hello")
    page.press("#input", "Enter")
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "API key" in page.inner_text("#error")
    assert page.locator("#messages li").count() == 0  # the failed turn was taken back
    assert page.input_value("#input") == "hello"  # and its text put back to retry
    page.fill("#api-key", KEY)
    set_range(page, "#temperature", 0)
    page.press("#input", "Enter")
    page.locator("li.assistant[data-state=done]").wait_for(timeout=60_000)
    assert page.locator("#error").is_hidden()


def test_stop_button_ends_the_answer(page):
    page.fill("#api-key", KEY)
    page.fill("#max-tokens", "400")
    set_range(page, "#temperature", 2)  # sampled nonsense: long enough to stop halfway
    page.fill("#input", "tell me a long story")
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelector('li.assistant .text')?.textContent.length > 0", timeout=60_000)
    page.click("#stop")
    page.locator("li.assistant[data-state=done]").wait_for(timeout=10_000)
    assert page.locator("#send").is_enabled() and page.locator("#stop").is_hidden()


def test_webui_command_is_serve_with_the_page():
    from mmtune.cli.main import build_parser

    args = build_parser().parse_args(["webui", "merged"])
    assert (args.ui, args.port, args.host) == (True, 7860, "127.0.0.1")
    args = build_parser().parse_args(["serve", "merged"])
    assert (args.ui, args.port) == (False, 8000)
    assert build_parser().parse_args(["serve", "merged", "--ui"]).ui


@pytest.fixture
def tool_page(browser):
    """The page on a server of the tiny model fine-tuned to call the `mmtune data tools` tools."""
    from mmtune.testing.runs import tool_run

    _, result, _ = tool_run()
    running = serve_in_thread(create_app(load_for_inference(str(result.final_dir), device="cpu"),
                                         ServerSettings("agent", ui=True)))
    try:
        with open_page(browser, running.url, "agent", 160) as page:
            yield page
    finally:
        running.stop()


def test_tool_calls_show_and_their_results_go_back(tool_page):
    from mmtune.data.synth.tools import TOOLS

    page = tool_page
    set_range(page, "#temperature", 0)
    page.fill("#tools", "[not json")
    page.fill("#input", "What is the weather in Paris?")
    page.press("#input", "Enter")
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "Tools (in Settings) are not valid JSON" in page.inner_text("#error")
    assert page.locator("#messages li").count() == 0 and page.input_value("#input") == "What is the weather in Paris?"

    page.fill("#tools", json.dumps(TOOLS))
    page.press("#input", "Enter")
    call = page.locator("li.assistant .tool-call").first
    call.wait_for(timeout=60_000)
    assert call.inner_text().startswith("tool call: get_weather({")  # name(arguments), as text
    # a result holding markup is shown as text, and goes back as a tool message
    result = '{"temperature_c": 21, "condition": "<img src=x onerror=alert(1)>"}'
    page.fill(".tool-results input", result)
    page.click(".tool-results button")
    answer = page.locator("li.assistant").nth(1)
    answer.and_(page.locator("[data-state=done]")).wait_for(timeout=60_000)
    assert page.locator("li.tool .text").inner_text() == result and page.locator("li.tool img").count() == 0
    assert answer.locator(".text").inner_text().strip() and answer.locator(".tool-call").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-tools.png"))
