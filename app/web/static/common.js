// Shared by every page: calling the app's JSON API, showing its errors, the server indicator.
"use strict";

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed with HTTP ${status}`);
    this.status = status;
    this.code = error.code || "error";
    this.fix = error.fix || "";
  }
}

// Calls the app's API; resolves to the parsed JSON or rejects with an ApiError.
async function callApi(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, { error: {
      message: "the web app itself is not reachable",
      fix: "check that `rnnkit app` is still running" } });
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, body);
  }
  return body;
}

function postJson(path, data) {
  return callApi(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
}

// Creates an element with text content (never innerHTML with data, so nothing gets injected).
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// Text with `backticks` shown as code.
function withCode(parent, text) {
  String(text).split("`").forEach((part, i) => {
    if (part) parent.appendChild(i % 2 ? el("code", part) : document.createTextNode(part));
  });
  return parent;
}

function showError(err) {
  const box = document.getElementById("error");
  box.replaceChildren();
  const message = withCode(el("strong"), err.message);
  box.appendChild(message);
  if (err.fix) box.appendChild(withCode(el("span"), err.fix));
  box.dataset.code = err.code || "error";
  box.hidden = false;
  if (err.code === "server_unreachable") markServer(false);
}

function clearError() {
  const box = document.getElementById("error");
  box.hidden = true;
  box.replaceChildren();
}

function markServer(up) {
  const badge = document.getElementById("server-status");
  badge.classList.toggle("up", up);
  badge.classList.toggle("down", !up);
  badge.title = up ? "model server reachable" : "model server not reachable";
}

async function checkServer() {
  try {
    await callApi("/api/health");
    markServer(true);
  } catch (err) {
    markServer(false);
  }
}

// Disables a form's submit button while `work` runs, then restores it.
async function busy(button, label, work) {
  const original = button.textContent;
  button.disabled = true;
  button.textContent = label;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.textContent = original;
  }
}

function servedBy(result) {
  const version = result.version ? ` version ${result.version}` : "";
  return `served by ${result.model}${version} in ${result.elapsed_ms} ms`;
}

// The model views, by kind (classify, tag, seq2seq, caption): each view's script adds
// VIEWS[kind] = (box, model) => { ... }, which builds its form and result inside `box` for
// `model` (an entry of GET /api/models).
const VIEWS = {};

// A form with one text field and a submit button, appended to `box`. `onSubmit(text)` runs on
// submit (and on Ctrl+Enter in a textarea) with the button disabled; its errors are shown.
function textForm(box, options, onSubmit) {
  const form = el("form", null, "card");
  form.id = "view-form";
  const label = el("label", options.label);
  label.htmlFor = "view-text";
  const field = el(options.multiline ? "textarea" : "input");
  field.id = "view-text";
  field.required = true;
  field.maxLength = 20000;
  if (options.multiline) field.rows = 5; else field.type = "text";
  field.placeholder = options.placeholder || "";
  const row = el("div", null, "row");
  const button = el("button", options.button, "primary");
  button.id = "view-submit";
  button.type = "submit";
  row.appendChild(button);
  form.append(label, field, row);
  field.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    try {
      await busy(button, options.busyLabel || "Working…", () => onSubmit(field.value));
      markServer(true);
    } catch (err) {
      showError(err);
    }
  });
  box.appendChild(form);
  return field;
}

// An empty, hidden result card with an id, appended to `box`.
function resultCard(box, id = "result") {
  const section = el("section", null, "card result");
  section.id = id;
  section.hidden = true;
  box.appendChild(section);
  return section;
}

// The "served by ... in ... ms" line of a result.
function servedByLine(result) {
  const line = el("p", servedBy(result), "muted small");
  line.id = "served-by";
  return line;
}

document.addEventListener("DOMContentLoaded", checkServer);
