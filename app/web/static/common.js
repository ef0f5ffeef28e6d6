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

// Example buttons fill the page's main input.
function wireExamples(input) {
  document.querySelectorAll(".example").forEach((button) => {
    button.addEventListener("click", () => {
      input.value = button.dataset.text;
      input.focus();
    });
  });
}

document.addEventListener("DOMContentLoaded", checkServer);
