// The chat page. Conversations live in this browser (localStorage), each answer streams from the
// server's own OpenAI endpoint (/v1/chat/completions, stream: true), so the page and API clients
// share one code path on the server.
//
// Safety: what the user or a tool typed is inserted as textContent only; the model's answers are
// markdown, turned into HTML by marked and then sanitized by DOMPurify (no scripts, event handlers,
// styles, forms or images: an answer cannot run code or fetch from elsewhere) before it is shown.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "mmtune-chat-v1";  // {current, conversations: {id: {id, title, updated, history}}}
const SETTINGS = "mmtune-chat-settings-v1";
const state = { config: null, images: [], controller: null, store: null };

// ---------------------------------------------------------------- storage

function loadStore() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) || "null");
    if (saved && saved.conversations) return saved;
  } catch (err) { /* a damaged store starts afresh */ }
  return { current: null, conversations: {} };
}

function saveStore() {
  const text = JSON.stringify(state.store);
  try {
    localStorage.setItem(STORE, text);
  } catch (err) {  // over the browser's quota (images are large): keep the words, drop the pictures
    const slim = JSON.parse(text);
    for (const c of Object.values(slim.conversations)) {
      for (const m of c.history) if (m.images) { m.images = []; m.imagesDropped = true; }
    }
    try { localStorage.setItem(STORE, JSON.stringify(slim)); } catch (again) { /* nothing more to do */ }
  }
}

function conversation() {
  let c = state.store.conversations[state.store.current];
  if (!c) {
    const id = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    c = state.store.conversations[id] = { id, title: "", updated: Date.now(), history: [] };
    state.store.current = id;
  }
  return c;
}

function history() { return conversation().history; }

function touch() {
  const c = conversation();
  const first = c.history.find((m) => m.role === "user");
  c.title = first ? first.content.slice(0, 60) : "";
  c.updated = Date.now();
  saveStore();
  renderList();
}

const SETTING_IDS = ["system", "temperature", "top-p", "max-tokens", "tools"];

function saveSettings() {
  const values = {};
  for (const id of SETTING_IDS) values[id] = $(id).value;
  try { localStorage.setItem(SETTINGS, JSON.stringify(values)); } catch (err) { /* full: they stay for this visit */ }
}

function loadSettings() {
  let values = {};
  try { values = JSON.parse(localStorage.getItem(SETTINGS) || "{}"); } catch (err) { values = {}; }
  for (const id of SETTING_IDS) if (typeof values[id] === "string") $(id).value = values[id];
  $("temperature-value").textContent = $("temperature").value;
  $("top-p-value").textContent = $("top-p").value;
}

// ---------------------------------------------------------------- rendering

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

// Only HTML (no SVG or MathML, which can load images from elsewhere), no ids or names (an answer must
// not shadow the page's own elements), no styles, and links only to http(s) and mailto.
const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio",
                "picture", "source", "object", "embed", "link", "meta", "base"],
  FORBID_ATTR: ["style", "id", "name", "background", "srcset", "poster", "formaction"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  SANITIZE_NAMED_PROPS: true,
};

function renderMarkdown(target, text) {
  const html = window.marked.parse(text, { gfm: true, breaks: true });
  target.innerHTML = window.DOMPurify.sanitize(html, SANITIZE);
  for (const a of target.querySelectorAll("a")) {
    a.setAttribute("target", "_blank");
    a.setAttribute("rel", "noopener noreferrer");
  }
  for (const pre of target.querySelectorAll("pre")) addCopyButton(pre);
}

function addCopyButton(pre) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.addEventListener("click", async () => {
    const code = pre.querySelector("code");
    try {
      await navigator.clipboard.writeText(code ? code.textContent : pre.firstChild.textContent);
      button.textContent = "Copied";
    } catch (err) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  pre.append(button);
}

function addBubble(message) {
  const li = document.createElement("li");
  li.className = message.role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = message.role;
  const body = document.createElement("div");
  body.className = "text";
  li.append(label, body);
  setBubbleText(li, message.content || "");
  for (const src of message.images || []) {
    const img = document.createElement("img");
    img.src = src;  // a data URL the user attached
    img.alt = "attached image";
    li.append(img);
  }
  if (message.imagesDropped) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "(images not kept: the browser's storage was full)";
    li.append(note);
  }
  if (message.meta) showMeta(li, message.meta);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function setBubbleText(li, text) {
  const body = li.querySelector(".text");
  if (li.classList.contains("assistant")) {
    renderMarkdown(body, text);
  } else {
    body.classList.add("plain");
    body.textContent = text;
  }
}

function showMeta(li, meta) {
  const line = document.createElement("div");
  line.className = "meta muted";
  const parts = [meta.tokens + " tokens"];
  if (meta.tokensPerSecond) parts.push(meta.tokensPerSecond.toFixed(1) + " tokens/s");
  if (meta.promptTokens) parts.push("prompt " + meta.promptTokens);
  line.textContent = parts.join(" · ");
  li.append(line);
}

// Edit on each user message, Regenerate on the last answer.
function addActions() {
  const items = [...$("messages").children];
  const messages = history();
  items.forEach((li, i) => {
    li.querySelector(".actions")?.remove();
    const m = messages[i];
    const actions = document.createElement("div");
    actions.className = "actions";
    if (m.role === "user") actions.append(actionButton("Edit", "edit", () => editFrom(i)));
    if (m.role === "assistant" && i === messages.length - 1) {
      actions.append(actionButton("Regenerate", "regenerate", regenerate));
    }
    if (actions.childElementCount) li.append(actions);
  });
}

function actionButton(text, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  b.addEventListener("click", () => { if (!state.controller) onClick(); });
  return b;
}

function renderConversation() {
  $("messages").replaceChildren();
  const messages = history();
  messages.forEach((m, i) => {
    const li = addBubble(m);
    if (m.tool_calls) showToolCalls(li, m.tool_calls, i === messages.length - 1);
  });
  addActions();
}

function renderList() {
  const list = $("conversation-list");
  list.replaceChildren();
  const all = Object.values(state.store.conversations).filter((c) => c.history.length || c.id === state.store.current);
  all.sort((a, b) => b.updated - a.updated);
  for (const c of all) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    if (c.id === state.store.current) li.setAttribute("aria-current", "true");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = c.title || "New conversation";
    open.addEventListener("click", () => switchTo(c.id));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.title = "Delete this conversation";
    del.setAttribute("aria-label", "Delete conversation: " + (c.title || "New conversation"));
    del.textContent = "×";
    del.addEventListener("click", () => remove(c.id));
    li.append(open, del);
    list.append(li);
  }
}

function switchTo(id) {
  if (state.controller) return;
  state.store.current = id;
  saveStore();
  showError("");
  renderConversation();
  renderList();
}

function remove(id) {
  if (state.controller) {  // an answer is streaming into the current conversation: leave it on screen
    if (id === state.store.current) return;
    delete state.store.conversations[id];
    saveStore();
    renderList();
    return;
  }
  delete state.store.conversations[id];
  if (state.store.current === id) state.store.current = null;
  saveStore();
  renderConversation();
  renderList();
}

// ---------------------------------------------------------------- requests

function apiMessages() {
  const out = [];
  const system = $("system").value.trim();
  if (system) out.push({ role: "system", content: system });
  for (const m of history()) {
    if (m.images && m.images.length) {
      const parts = [{ type: "text", text: m.content }];
      for (const url of m.images) parts.push({ type: "image_url", image_url: { url } });
      out.push({ role: m.role, content: parts });
    } else if (m.tool_calls) {
      out.push({ role: "assistant", content: m.content || null, tool_calls: m.tool_calls });
    } else if (m.role === "tool") {
      out.push({ role: "tool", tool_call_id: m.tool_call_id, content: m.content });
    } else {
      out.push({ role: m.role, content: m.content });
    }
  }
  return out;
}

// The tool definitions typed in Settings (an OpenAI `tools` list), or undefined when empty.
function toolDefinitions() {
  const text = $("tools").value.trim();
  if (!text) return undefined;
  let tools;
  try {
    tools = JSON.parse(text);
  } catch (err) {
    throw new Error("Tools (in Settings) are not valid JSON: " + err.message);
  }
  if (!Array.isArray(tools)) throw new Error("Tools (in Settings) must be a JSON list of tool definitions");
  return tools;
}

function requestBody() {
  return {
    model: state.config.model,
    messages: apiMessages(),
    tools: toolDefinitions(),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value) || undefined,
  };
}

// A failed request as a sentence a person can act on.
async function requestError(res) {
  const body = await res.json().catch(() => ({}));
  const message = (body.error && body.error.message) || res.status + " " + res.statusText;
  if (res.status === 401) {
    $("api-key-label").hidden = false;
    $("api-key").focus();
    return $("api-key").value
      ? "The server refused the API key in Settings (wrong key?): correct it under Settings → API key."
      : "This server needs an API key: enter it under Settings → API key.";
  }
  return message;
}

// Reads OpenAI's server-sent events: "data: {chunk}\n\n" ... "data: [DONE]\n\n". Tool-call deltas
// are put together by index into `calls` (OpenAI's shape: id, type, function {name, arguments}).
async function readStream(res, onText, calls, onUsage) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) onUsage(chunk.usage);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) onText(delta.content);
        for (const piece of (delta && delta.tool_calls) || []) {
          const call = calls[piece.index] || (calls[piece.index] = { id: "", type: "function", function: { name: "", arguments: "" } });
          if (piece.id) call.id = piece.id;
          if (piece.function && piece.function.name) call.function.name += piece.function.name;
          if (piece.function && piece.function.arguments) call.function.arguments += piece.function.arguments;
        }
      }
    }
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
  $("clear").disabled = busy;
}

async function send(text) {
  showError("");
  const turn = { role: "user", content: text };
  if (state.images.length) turn.images = state.images.slice();
  history().push(turn);
  touch();
  const userBubble = addBubble(turn);
  const images = state.images;
  clearImages();
  await complete(() => {
    // The turn failed: take it back so the next message does not follow an unanswered one.
    history().splice(history().indexOf(turn), 1);
    touch();
    userBubble.remove();
    if ($("input").value === "") $("input").value = text;
    if (!state.images.length) setImages(images);
  });
}

// Asks the server for the next assistant message and streams it into a new bubble. On failure
// (not Stop) the bubble goes and `takeBack` undoes what led to the request.
async function complete(takeBack) {
  const bubble = addBubble({ role: "assistant", content: "" });
  bubble.classList.add("streaming");
  bubble.setAttribute("aria-busy", "true");  // screen readers wait for the whole answer
  const owner = conversation();
  state.controller = new AbortController();
  setBusy(true);
  let answer = "";
  let usage = null;
  let first = null;
  let drawn = false;
  const calls = [];
  try {
    const headers = { "Content-Type": "application/json" };
    const key = $("api-key").value;
    if (key) headers.Authorization = "Bearer " + key;
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers, body: JSON.stringify(requestBody()), signal: state.controller.signal,
    });
    if (!res.ok) throw new Error(await requestError(res));
    await readStream(res, (piece) => {
      first = first || performance.now();
      answer += piece;
      if (!drawn) {  // redraw the markdown at most once a frame
        drawn = true;
        requestAnimationFrame(() => { drawn = false; setBubbleText(bubble, answer); bubble.scrollIntoView({ block: "end" }); });
      }
    }, calls, (u) => { usage = u; });
    setBubbleText(bubble, answer);
    const message = { role: "assistant", content: answer };
    if (calls.length) message.tool_calls = calls;
    if (usage) {
      const seconds = first ? (performance.now() - first) / 1000 : 0;
      const later = usage.completion_tokens - 1;  // tokens after the first one, over the time they took
      message.meta = { tokens: usage.completion_tokens, promptTokens: usage.prompt_tokens,
                       tokensPerSecond: seconds > 0 && later > 0 ? later / seconds : null };
      showMeta(bubble, message.meta);
    }
    owner.history.push(message);
    if (calls.length) showToolCalls(bubble, calls, true);
  } catch (err) {
    if (err.name === "AbortError" && answer) {
      setBubbleText(bubble, answer);
      owner.history.push({ role: "assistant", content: answer });  // keep what was said before Stop
    } else {
      bubble.remove();
      takeBack();
      if (err.name !== "AbortError") showError(err.message);
    }
  } finally {
    bubble.classList.remove("streaming");
    bubble.removeAttribute("aria-busy");
    bubble.dataset.state = "done";
    state.controller = null;
    setBusy(false);
    touch();
    if (owner === conversation()) addActions();
  }
}

function regenerate() {
  const messages = history();
  const last = messages[messages.length - 1];
  if (!last || last.role !== "assistant") return;
  showError("");
  messages.pop();
  $("messages").lastElementChild.remove();
  complete(() => {  // failed: the old answer comes back
    messages.push(last);
    renderConversation();
  });
}

// Puts user message `i` back into the composer and drops it and everything after it: the user
// edits it and sends it again.
function editFrom(i) {
  const messages = history();
  const m = messages[i];
  messages.splice(i);
  touch();
  renderConversation();
  $("input").value = m.content;
  setImages(m.images || []);
  $("input").focus();
}

// Shows each call as name(arguments) and, while it waits for results, a form to type each tool's
// result; sending them adds tool messages and asks for the answer that uses them.
function showToolCalls(bubble, calls, waiting) {
  const form = document.createElement("form");
  form.className = "tool-results";
  for (const call of calls) {
    const line = document.createElement("div");
    line.className = "tool-call";
    line.textContent = "tool call: " + call.function.name + "(" + call.function.arguments + ")";
    form.append(line);
    if (!waiting) continue;
    const input = document.createElement("input");
    input.placeholder = "result of " + call.function.name + " (e.g. JSON)";
    input.setAttribute("aria-label", "result of the call to " + call.function.name);
    input.dataset.callId = call.id;
    form.append(input);
  }
  if (waiting) {
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Send tool results";
    form.append(button);
    form.addEventListener("submit", (e) => { e.preventDefault(); sendToolResults(form, button, calls); });
  }
  bubble.append(form);
}

async function sendToolResults(form, button, calls) {
  if (state.controller) return;
  const messages = history();
  if (!messages.length || messages[messages.length - 1].tool_calls !== calls) {  // the chat went on meanwhile
    form.querySelectorAll("input, button").forEach((el) => { el.disabled = true; });
    showError("These tool calls were not the last message any more; their results were not sent.");
    return;
  }
  showError("");
  const added = [];
  for (const input of form.querySelectorAll("input")) {
    const message = { role: "tool", tool_call_id: input.dataset.callId, content: input.value };
    history().push(message);
    added.push([message, addBubble(message)]);
  }
  button.disabled = true;
  await complete(() => {
    for (const [message, toolBubble] of added) {
      history().splice(history().indexOf(message), 1);
      toolBubble.remove();
    }
    button.disabled = false;
  });
}

// ---------------------------------------------------------------- images

function setImages(images) {
  state.images = images.slice();
  const box = $("attachments");
  box.replaceChildren();
  state.images.forEach((src, i) => {
    const item = document.createElement("div");
    item.className = "attachment";
    const img = document.createElement("img");
    img.src = src;
    img.alt = "image to send";
    const del = document.createElement("button");
    del.type = "button";
    del.title = "Remove image";
    del.setAttribute("aria-label", "Remove image " + (i + 1));
    del.textContent = "×";
    del.addEventListener("click", () => setImages(state.images.filter((_, j) => j !== i)));
    item.append(img, del);
    box.append(item);
  });
  box.hidden = !state.images.length;
}

function clearImages() {
  $("image").value = "";
  setImages([]);
}

function addImageFiles(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/"));
  if (!images.length || !state.config) return false;
  if (!state.config.vision) {
    showError("This model takes no images (a text-only model).");
    return true;
  }
  for (const file of images) {
    const reader = new FileReader();
    reader.onload = () => setImages([...state.images, reader.result]);  // data URLs: the only form the server takes
    reader.readAsDataURL(file);
  }
  return true;
}

// ---------------------------------------------------------------- wiring

async function loadConfig() {
  const res = await fetch("/ui/config");
  state.config = await res.json();
  $("model-name").textContent = state.config.model;
  if (!localStorage.getItem(SETTINGS)) $("max-tokens").value = state.config.max_tokens;
  $("image-label").hidden = !state.config.vision;  // text-only models take no images
  $("image-hint").hidden = !state.config.vision;
  $("api-key-label").hidden = !state.config.auth;
  $("api-key").value = sessionStorage.getItem("mmtune-api-key") || "";
}

function wire() {
  $("settings").addEventListener("submit", (e) => e.preventDefault());
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || state.controller) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("clear").addEventListener("click", () => {
    if (state.controller) return;
    state.store.current = null;
    conversation();
    saveStore();
    showError("");
    renderConversation();
    renderList();
  });
  for (const [input, output] of [["temperature", "temperature-value"], ["top-p", "top-p-value"]]) {
    $(input).addEventListener("input", () => { $(output).textContent = $(input).value; });
  }
  for (const id of SETTING_IDS) $(id).addEventListener("change", saveSettings);
  for (const id of ["temperature", "top-p"]) $(id).addEventListener("input", saveSettings);
  // the key stays for this tab only (sessionStorage), never with the conversations
  $("api-key").addEventListener("input", () => sessionStorage.setItem("mmtune-api-key", $("api-key").value));
  $("image-label").addEventListener("keydown", (e) => {  // the label is the keyboard's way to the hidden input
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image").click(); }
  });
  $("image").addEventListener("change", () => { addImageFiles($("image").files); $("image").value = ""; });
  $("input").addEventListener("paste", (e) => {
    if (e.clipboardData && addImageFiles(e.clipboardData.files)) e.preventDefault();
  });
  $("composer").addEventListener("dragover", (e) => { e.preventDefault(); $("composer").classList.add("dropping"); });
  $("composer").addEventListener("dragleave", () => $("composer").classList.remove("dropping"));
  $("composer").addEventListener("drop", (e) => {
    e.preventDefault();
    $("composer").classList.remove("dropping");
    if (e.dataTransfer) addImageFiles(e.dataTransfer.files);
  });
}

state.store = loadStore();
wire();
loadSettings();
renderConversation();
renderList();
loadConfig().catch((err) => showError("cannot reach the server: " + err.message));
