// The dashboard's wiring: sign in with the tab's token (shared with the page at /), poll
// GET /api/ops/dashboard every few seconds, render each panel or its own error, and say
// clearly when the token is not allowed (403) or no longer valid (401).

import { api, ApiError, clearToken, setToken, token } from "/static/api.js";
import { el, RENDERERS } from "./panels.js";

const POLL_MS = 5000;
const MAX_BACKOFF_MS = 60000;
const $ = (id) => document.getElementById(id);

let timer = null;
let inFlight = null;
let failures = 0;
let paused = false;

function show(section) {
  for (const id of ["sign-in", "denied", "dashboard"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
  $("pause").hidden = section !== "dashboard";
  $("overall").hidden = section !== "dashboard";
}

function message(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

function stop() {
  clearTimeout(timer);
  timer = null;
  if (inFlight) inFlight.abort();
  inFlight = null;
}

function schedule(delay) {
  clearTimeout(timer);
  if (!paused) timer = setTimeout(poll, delay);
}

function renderPanel(section, answer) {
  const body = section.querySelector(".body");
  const render = RENDERERS[section.dataset.panel];
  if (!answer) {
    section.dataset.state = "error";
    body.replaceChildren(el("p", { class: "error" }, "not in the answer"));
    return;
  }
  if (!answer.ok) {
    section.dataset.state = "error";
    body.replaceChildren(el("p", { class: "error" }, answer.error));
    return;
  }
  try {
    body.replaceChildren(...render(answer.data));
    section.dataset.state = answer.stale ? "stale" : "ok";
  } catch (error) {
    section.dataset.state = "error";
    body.replaceChildren(el("p", { class: "error" }, `cannot show this panel: ${error.message}`));
  }
}

function render(snapshot) {
  for (const section of document.querySelectorAll("[data-panel]")) {
    renderPanel(section, snapshot.panels[section.dataset.panel]);
  }
  const health = snapshot.panels.health;
  const status = health && health.ok ? health.data.status : "unknown";
  $("overall").dataset.status = status;
  $("overall").textContent = `service: ${status}`;
  $("updated").textContent = `updated ${new Date(snapshot.generated_at).toLocaleTimeString()}`;
}

async function poll() {
  timer = null;
  if (document.hidden || paused) return;
  inFlight = new AbortController();
  try {
    const snapshot = await api("GET", "/api/ops/dashboard", undefined, { signal: inFlight.signal });
    failures = 0;
    message("");
    show("dashboard");
    render(snapshot);
    schedule(POLL_MS);
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiError && error.status === 401) {
      stop();
      clearToken();
      signedOut("Your token is no longer valid: sign in again.");
      return;
    }
    if (error instanceof ApiError && error.status === 403) {
      stop();
      show("denied");
      return;
    }
    failures += 1;
    const delay = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** failures);
    message(`The dashboard did not answer (${error.message}); retrying in ${Math.round(delay / 1000)} s.`);
    schedule(delay);
  } finally {
    inFlight = null;
  }
}

function signedOut(text) {
  show("sign-in");
  message(text || "");
  $("token").value = "";
  $("token").focus();
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  setToken(value);
  message("");
  poll();
});

$("sign-out").addEventListener("click", () => {
  stop();
  clearToken();
  signedOut("");
});

$("other-token").addEventListener("click", () => {
  clearToken();
  signedOut("");
});

$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  if (paused) stop();
  else poll();
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && token() && !timer && !inFlight && !paused) poll();
});

if (token()) poll();
else signedOut("");
