"""The web chat page (`mmtune serve --ui` / `mmtune webui`), end to end in headless Chromium.

The browser tests skip, saying why, when Playwright or a Chromium binary is missing; CI installs
both (Debian's `chromium`, PyPI's `playwright`; Playwright's own browser download is not used).
A screenshot of the chat is saved under test-artifacts/ (MMTUNE_TEST_ARTIFACTS overrides).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    with urllib.request.urlopen(ui_server.url + "/", timeout=30) as r:  # the page may load only its own files
        policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "img-src 'self' data: blob:" in policy and "connect-src 'self'" in policy
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline handlers: the policy would block them
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
def open_page(browser, url: str, model: str, max_tokens: int, width: int = 1100, height: int = 720):
    """The chat page in a fresh browser profile, loaded and connected to `model` (clipboard allowed);
    fails the test on any page error."""
    # bypass_csp: Playwright's own waits evaluate strings, which the page's policy forbids; the policy
    # is checked in test_page_and_assets_are_served, the sanitizer (the first defence) here, without it
    context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    wait_connected(page, model)
    page.fill("#max-tokens", str(max_tokens))
    yield page
    context.close()
    assert not errors, errors


def wait_connected(page, model: str) -> None:
    page.wait_for_function(f"document.getElementById('model-name').textContent === '{model}'")


def save_screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


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
            const last = [...document.querySelectorAll('#messages > li.assistant .text')].pop();
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
    assert page.locator("#messages > li").count() == 4  # two turns kept on screen and in the history
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-chat.png"))
    page.click("#clear")
    assert page.locator("#messages > li").count() == 0
    assert NAME in ask(page, QUESTION)  # a fresh conversation answers like the first one


def test_errors_show_and_take_the_turn_back(page):
    page.fill("#input", "hello")
    page.press("#input", "Enter")  # no key yet
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "needs an API key" in page.inner_text("#error") and "Settings" in page.inner_text("#error")
    assert page.evaluate("document.activeElement.id") == "api-key"  # the field to fill is focused
    page.fill("#api-key", "wrong")
    page.press("#input", "Enter")
    page.wait_for_function("document.getElementById('error').textContent.includes('refused the API key')")
    assert "Settings" in page.inner_text("#error")
    assert page.locator("#messages > li").count() == 0  # the failed turn was taken back
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
    assert page.locator("li.assistant .meta").count() == 0  # no usage line: it was stopped, it did not finish
    shown = page.locator("li.assistant .text").inner_text()
    time.sleep(1.0)
    assert page.locator("li.assistant .text").inner_text() == shown  # nothing more arrives
    stored = json.loads(page.evaluate("localStorage.getItem('mmtune-chat-v1')"))
    history = stored["conversations"][stored["current"]]["history"]
    assert history[-1]["role"] == "assistant" and history[-1]["content"]  # what came before Stop is kept


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
    assert page.locator("#messages > li").count() == 0 and page.input_value("#input") == "What is the weather in Paris?"

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
    # the model's reply to the result (words, or one more call: the tiny model's choice, not the page's)
    assert answer.locator(".text").inner_text().strip() or answer.locator(".tool-call").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-tools.png"))


def test_vendored_libraries_are_the_listed_releases(ui_server):
    import hashlib
    import re

    vendor = Path(__file__).resolve().parents[2] / "mmtune" / "infer" / "webui" / "vendor"
    listed = dict(re.findall(r"\| `([\w.]+\.js)` \|.*\| `([0-9a-f]{64})` \|", (vendor / "README.md").read_text()))
    assert set(listed) == {"marked.min.js", "purify.min.js"}
    for name, digest in listed.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
        status, kind, _ = get(f"{ui_server.url}/ui/vendor/{name}")  # served by the page's own server
        assert status == 200 and "javascript" in kind


HOSTILE = ("**bold** and `x`\n\n```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
           "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> "
           "[click](javascript:window.__pwned=3) <a href=\"https://example.org\" onclick=\"window.__pwned=4\">site</a> "
           "<form action=\"https://example.org\"><input name=q></form><iframe src=\"https://example.org\"></iframe>"
           "<svg><image href=\"https://example.org/x.png\"></image><a href=\"https://example.org\">s</a></svg>"
           "<math><mi>x</mi></math><table background=\"https://example.org/bg.png\"><tr><td>t</td></tr></table>"
           "<p id=\"input\">hijack</p><p name=\"send\">n</p>")


def store_conversation(page, history: list[dict]) -> None:
    """Put a conversation in the page's browser storage and reload, as if it had been held earlier."""
    stored = {"current": "c1", "conversations": {"c1": {"id": "c1", "title": "t", "updated": 1, "history": history}}}
    page.evaluate("s => localStorage.setItem('mmtune-chat-v1', s)", json.dumps(stored))
    page.reload()
    wait_connected(page, "zorblax")


def test_answers_render_markdown_safely_with_copyable_code(page):
    user_text = "<b>not bold</b> **nor this**"
    store_conversation(page, [{"role": "user", "content": user_text}, {"role": "assistant", "content": HOSTILE}])
    answer = page.locator("li.assistant .text")
    assert answer.locator("strong").inner_text() == "bold" and answer.locator("table td").count() == 3
    assert "print('hi')" in answer.locator("pre code").inner_text()
    for tag in ("img", "script", "form", "input", "iframe", "svg", "image", "math"):
        assert answer.locator(tag).count() == 0, tag
    for attribute in ("background", "id", "name"):
        assert answer.locator(f"[{attribute}]").count() == 0, attribute
    assert page.evaluate("document.getElementById('input').tagName") == "TEXTAREA"  # the page's own box
    assert answer.locator("a[href^='javascript']").count() == 0 and answer.locator("[onclick]").count() == 0
    site = answer.locator("a[href='https://example.org']")
    assert site.get_attribute("rel") == "noopener noreferrer" and site.get_attribute("target") == "_blank"
    user = page.locator("li.user .text")  # what the user typed stays text
    assert user.inner_text() == user_text and user.locator("b").count() == 0
    page.click("li.assistant pre .copy")
    page.wait_for_function("document.querySelector('li.assistant pre .copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"
    assert page.evaluate("window.__pwned") is None  # nothing in the answer ran
    save_screenshot(page, "webui-markdown.png")


def test_regenerate_edit_and_conversations_kept_across_reloads(page):
    page.fill("#api-key", KEY)
    set_range(page, "#temperature", 0)
    page.fill("#system", "Be brief.")
    page.dispatch_event("#system", "change")
    asked = []
    page.on("request", lambda r: asked.append(r) if r.url.endswith("/v1/chat/completions") else None)
    assert NAME in ask(page, QUESTION)
    meta = page.locator("li.assistant .meta").inner_text()
    assert re_match(r"\d+ tokens · [\d.]+ tokens/s · prompt \d+", meta), meta

    page.click("li.assistant .regenerate")
    page.wait_for_function("document.querySelectorAll('#messages > li').length === 2 && "
                           "document.querySelector('li.assistant')?.dataset.state === 'done'")
    assert len(asked) == 2 and NAME in page.locator("li.assistant .text").inner_text()

    page.click("li.user .edit")  # the question goes back to the composer, the turn leaves the chat
    assert page.input_value("#input") == QUESTION and page.locator("#messages > li").count() == 0
    page.fill("#input", "what is your name?")
    page.press("#input", "Enter")
    page.locator("li.assistant[data-state=done]").wait_for(timeout=60_000)
    assert page.locator("li.user .text").inner_text() == "what is your name?"

    page.reload()  # kept in this browser
    wait_connected(page, "zorblax")
    assert page.input_value("#system") == "Be brief."  # settings too
    stored = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert KEY not in stored  # the API key never goes into localStorage (the tab's sessionStorage only)
    assert page.locator("#messages > li").count() == 2
    assert page.locator("li.user .text").inner_text() == "what is your name?"
    assert page.locator("#conversation-list li").count() == 1

    page.click("#clear")
    assert page.locator("#messages > li").count() == 0
    ask(page, "hello")
    assert page.locator("#conversation-list li").count() == 2
    page.locator("#conversation-list .open", has_text="what is your name?").click()
    assert page.locator("li.user .text").inner_text() == "what is your name?"
    page.locator("#conversation-list li[aria-current] .delete").click()
    assert page.locator("#conversation-list .open", has_text="what is your name?").count() == 0
    assert "what is your name?" not in page.evaluate("localStorage.getItem('mmtune-chat-v1')")
    page.locator("#conversation-list .open", has_text="hello").click()
    assert page.locator("li.user .text").inner_text() == "hello"


def re_match(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


def test_phone_width_layout(browser, ui_server):
    with open_page(browser, ui_server.url, "zorblax", 24, width=390, height=844) as page:
        page.fill("#api-key", KEY)
        set_range(page, "#temperature", 0)
        assert NAME in ask(page, QUESTION)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scrolling"
        for selector in ("#input", "#send", "li.assistant", "#clear"):
            box = page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
        save_screenshot(page, "webui-phone.png")


@pytest.fixture(scope="module")
def vision_server():
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    loaded = load_for_inference(str(tiny_vlm_dir("qwen2_5_vl")), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny-vlm", ui=True)))
    yield running
    running.stop()


def png(seed: int) -> bytes:
    import io

    from mmtune.testing.tiny_vision import tiny_image

    buf = io.BytesIO()
    tiny_image(seed).save(buf, format="PNG")
    return buf.getvalue()


def test_several_images_by_file_paste_and_drop(browser, vision_server):
    with open_page(browser, vision_server.url, "tiny-vlm", 4) as page:
        assert page.locator("#image-label").is_visible()
        page.set_input_files("#image", [{"name": f"{i}.png", "mimeType": "image/png", "buffer": png(i)}
                                        for i in range(2)])
        page.wait_for_function("document.querySelectorAll('#attachments img').length === 2")
        event = """([kind, bytes]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], kind + '.png', {type: 'image/png'}));
            const target = kind === 'paste' ? document.getElementById('input') : document.getElementById('composer');
            const e = kind === 'paste' ? new ClipboardEvent('paste', {clipboardData: data, bubbles: true})
                                       : new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true});
            target.dispatchEvent(e);
        }"""
        page.evaluate(event, ["paste", list(png(2))])
        page.evaluate(event, ["drop", list(png(3))])
        page.wait_for_function("document.querySelectorAll('#attachments img').length === 4")
        page.locator("#attachments .attachment button").first.click()  # take one back
        assert page.locator("#attachments img").count() == 3
        bodies = []
        page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
        page.fill("#input", "what shapes are these?")
        page.press("#input", "Enter")
        page.locator("li.assistant[data-state=done]").wait_for(timeout=60_000)
        assert page.locator("#error").is_hidden()
        parts = bodies[0]["messages"][-1]["content"]
        assert [p["type"] for p in parts] == ["text", "image_url", "image_url", "image_url"]
        assert page.locator("li.user img").count() == 3 and page.locator("#attachments img").count() == 0
        save_screenshot(page, "webui-images.png")
