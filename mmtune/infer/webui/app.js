// The chat page: keeps the conversation in the browser and streams each answer from the
// server's own OpenAI endpoint (/v1/chat/completions, stream: true), so the page and API clients
// share one code path on the server. Text is always inserted as textContent (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, history: [], image: null, controller: null };

async function loadConfig() {
  const res = await fetch("/ui/config");
  state.config = await res.json();
  $("model-name").textContent = state.config.model;
  $("max-tokens").value = state.config.max_tokens;
  $("image-label").hidden = !state.config.vision;  // text-only models take no images
  $("api-key-label").hidden = !state.config.auth;
  $("api-key").value = sessionStorage.getItem("mmtune-api-key") || "";
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function addBubble(role, text, image) {
  const li = document.createElement("li");
  li.className = role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(label, body);
  if (image) {
    const img = document.createElement("img");
    img.src = image;
    img.alt = "attached image";
    li.append(img);
  }
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function apiMessages() {
  const out = [];
  const system = $("system").value.trim();
  if (system) out.push({ role: "system", content: system });
  for (const m of state.history) {
    if (m.image) {
      out.push({ role: m.role, content: [{ type: "text", text: m.content }, { type: "image_url", image_url: { url: m.image } }] });
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
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value) || undefined,
  };
}

// Reads OpenAI's server-sent events: "data: {chunk}\n\n" ... "data: [DONE]\n\n". Tool-call deltas
// are put together by index into `calls` (OpenAI's shape: id, type, function {name, arguments}).
async function readStream(res, onText, calls) {
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
  const turn = { role: "user", content: text, image: state.image };
  state.history.push(turn);
  const userBubble = addBubble("user", text, state.image);
  clearImage();
  await complete(() => {
    // The turn failed: take it back so the next message does not follow an unanswered one.
    state.history.splice(state.history.indexOf(turn), 1);
    userBubble.remove();
    if ($("input").value === "") $("input").value = text;
  });
}

// Asks the server for the next assistant message and streams it into a new bubble. On failure
// (not Stop) the bubble goes and `takeBack` undoes what led to the request.
async function complete(takeBack) {
  const bubble = addBubble("assistant", "");
  bubble.classList.add("streaming");
  const textNode = bubble.querySelector(".text");
  state.controller = new AbortController();
  setBusy(true);
  let answer = "";
  const calls = [];
  try {
    const headers = { "Content-Type": "application/json" };
    const key = $("api-key").value;
    if (key) headers.Authorization = "Bearer " + key;
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers, body: JSON.stringify(requestBody()), signal: state.controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || res.status + " " + res.statusText);
    }
    await readStream(res, (piece) => {
      answer += piece;
      textNode.textContent = answer;
      bubble.scrollIntoView({ block: "end" });
    }, calls);
    if (calls.length) {
      state.history.push({ role: "assistant", content: answer, tool_calls: calls });
      showToolCalls(bubble, calls);
    } else {
      state.history.push({ role: "assistant", content: answer });
    }
  } catch (err) {
    if (err.name === "AbortError" && answer) {
      state.history.push({ role: "assistant", content: answer });  // keep what was said before Stop
    } else {
      bubble.remove();
      takeBack();
      if (err.name !== "AbortError") showError(err.message);
    }
  } finally {
    bubble.classList.remove("streaming");
    bubble.dataset.state = "done";
    state.controller = null;
    setBusy(false);
  }
}

// Shows each call as name(arguments) and a form to type each tool's result; sending the results
// adds them as tool messages and asks for the answer that uses them.
function showToolCalls(bubble, calls) {
  const form = document.createElement("form");
  form.className = "tool-results";
  for (const call of calls) {
    const line = document.createElement("div");
    line.className = "tool-call";
    line.textContent = "tool call: " + call.function.name + "(" + call.function.arguments + ")";
    const input = document.createElement("input");
    input.placeholder = "result of " + call.function.name + " (e.g. JSON)";
    input.dataset.callId = call.id;
    form.append(line, input);
  }
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Send tool results";
  form.append(button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (state.controller) return;
    showError("");
    const added = [];
    for (const input of form.querySelectorAll("input")) {
      const message = { role: "tool", tool_call_id: input.dataset.callId, content: input.value };
      state.history.push(message);
      added.push([message, addBubble("tool", input.value)]);
    }
    button.disabled = true;
    await complete(() => {
      for (const [message, toolBubble] of added) {
        state.history.splice(state.history.indexOf(message), 1);
        toolBubble.remove();
      }
      button.disabled = false;
    });
  });
  bubble.append(form);
}

function clearImage() {
  state.image = null;
  $("image").value = "";
  $("attachment").hidden = true;
}

function wire() {
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
    state.history = [];
    $("messages").replaceChildren();
    showError("");
  });
  for (const [input, output] of [["temperature", "temperature-value"], ["top-p", "top-p-value"]]) {
    $(input).addEventListener("input", () => { $(output).textContent = $(input).value; });
  }
  $("api-key").addEventListener("change", () => sessionStorage.setItem("mmtune-api-key", $("api-key").value));
  $("image").addEventListener("change", () => {
    const file = $("image").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      state.image = reader.result;  // a data URL, the only image form the server accepts
      $("attachment-preview").src = state.image;
      $("attachment").hidden = false;
    };
    reader.readAsDataURL(file);
  });
  $("attachment-remove").addEventListener("click", clearImage);
}

wire();
loadConfig().catch((err) => showError("cannot reach the server: " + err.message));
