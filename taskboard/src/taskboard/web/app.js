// The page's wiring: sign in with a token, pick a workspace, keep its tasks live, and run
// the bell and the push opt-in. Everything a user wrote reaches the DOM as text only.

import { api, ApiError, clearToken, setToken, token } from "./api.js";
import { Bell } from "./bell.js";
import { Board } from "./board.js";
import { disablePush, enablePush, pushState } from "./push.js";
import { LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const WORKSPACE_KEY = "taskboard.workspace";
const LIVE_TEXT = { connecting: "connecting…", live: "live", retrying: "reconnecting", stopped: "offline" };

const state = { me: null, workspaceId: null, stream: null };

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

const board = new Board({ rows: $("task-rows"), empty: $("no-tasks"), onError: showMessage });
const bell = new Bell({
  button: $("bell"),
  badge: $("unread"),
  panel: $("notifications"),
  list: $("notification-list"),
  empty: $("notification-empty"),
  markAll: $("mark-all"),
  onError: showMessage,
  onOpenNotification: (item) => {
    if (item.workspace_id !== state.workspaceId && known(item.workspace_id)) {
      $("workspace").value = String(item.workspace_id);
      selectWorkspace(item.workspace_id);
    }
  },
});

function known(workspaceId) {
  return state.me?.workspaces.some((ws) => ws.id === workspaceId) ?? false;
}

function setLive(liveState, detail) {
  const live = $("live");
  live.dataset.state = liveState;
  live.textContent = LIVE_TEXT[liveState] ?? liveState;
  live.title = detail || "";
}

const TASK_EVENTS = new Set(["task.created", "task.updated", "task.assigned", "task.restored"]);

function onEvent(type, event) {
  const taskId = event?.data?.task_id;
  if (typeof taskId === "number" && Number(event.workspace_id) === state.workspaceId) {
    if (type === "task.deleted") board.refreshTask(taskId, true);
    else if (TASK_EVENTS.has(type)) board.refreshTask(taskId).catch((e) => showMessage(e.message));
  }
  bell.refreshSoon();
}

function startStream(workspaceId) {
  state.stream?.stop();
  const stream = new LiveStream(`/api/workspaces/${workspaceId}/events`, {
    token: token(),
    onEvent,
    onOpen: (fresh) => {
      if (fresh) reload(); // events from now on are on the stream: the list starts here
    },
    onReset: () => reload(),
    onState: (liveState, detail) => {
      if (state.stream === stream) setLive(liveState, detail);
    },
    onClosed: (code, reason) => {
      if (state.stream !== stream) return;
      if (code === "unauthorized") {
        clearToken();
        showSignedOut("Your token is no longer valid: sign in again.");
      } else if (code === "revoked" || code === "not_member") {
        leaveWorkspace(workspaceId, reason);
      } else {
        showMessage(`Live updates stopped: ${reason}.`);
      }
    },
  });
  state.stream = stream;
  stream.start();
}

/** The caller lost `workspaceId`: its tasks and its entry in the picker go, and the
 * next workspace (if any) is shown instead. */
async function leaveWorkspace(workspaceId, reason) {
  state.me.workspaces = state.me.workspaces.filter((ws) => ws.id !== workspaceId);
  $("workspace").querySelector(`option[value="${workspaceId}"]`)?.remove();
  sessionStorage.removeItem(WORKSPACE_KEY);
  state.workspaceId = null;
  board.clear();
  const next = state.me.workspaces[0]?.id;
  if (next !== undefined) {
    $("workspace").value = String(next);
    await selectWorkspace(next);
  }
  showMessage(`You left a workspace: ${reason}.`, "info");
}

async function reload() {
  if (state.workspaceId === null) return;
  try {
    await board.load(state.workspaceId, state.me.user);
    const wanted = Number(new URL(window.location.href).searchParams.get("task"));
    if (wanted) board.highlight(wanted);
  } catch (error) {
    showMessage(`Could not load the tasks: ${error.message}`);
  }
}

async function selectWorkspace(workspaceId) {
  state.stream?.stop();
  state.stream = null;
  state.workspaceId = workspaceId;
  sessionStorage.setItem(WORKSPACE_KEY, String(workspaceId));
  const url = new URL(window.location.href);
  if (url.searchParams.get("workspace") !== String(workspaceId)) url.searchParams.delete("task");
  url.searchParams.set("workspace", String(workspaceId));
  history.replaceState(null, "", url);
  showMessage("");
  await reload();
  startStream(workspaceId);
}

function preferredWorkspace(workspaces) {
  const wanted = [
    new URL(window.location.href).searchParams.get("workspace"),
    sessionStorage.getItem(WORKSPACE_KEY),
  ].map(Number);
  return wanted.find((id) => workspaces.some((ws) => ws.id === id)) ?? workspaces[0]?.id ?? null;
}

function showSignedOut(text = "") {
  state.stream?.stop();
  state.stream = null;
  state.me = null;
  state.workspaceId = null;
  bell.stop();
  board.clear();
  $("tools").hidden = true;
  $("board").hidden = true;
  $("sign-in").hidden = false;
  $("token").value = "";
  showMessage(text);
  $("token").focus();
}

async function signIn() {
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (error) {
    clearToken();
    const why = error instanceof ApiError && error.status === 401 ? "That token is not valid." : error.message;
    showSignedOut(why);
    return;
  }
  state.me = me;
  $("sign-in").hidden = true;
  $("tools").hidden = false;
  $("board").hidden = false;
  $("who").textContent = me.user.name;
  const picker = $("workspace");
  picker.replaceChildren(
    ...me.workspaces.map((ws) => {
      const option = document.createElement("option");
      option.value = String(ws.id);
      option.textContent = `${ws.name} (${ws.role})`;
      return option;
    }),
  );
  bell.start();
  refreshPushButton();
  const chosen = preferredWorkspace(me.workspaces);
  if (chosen === null) {
    showMessage("You are not a member of any workspace yet.", "info");
    return;
  }
  picker.value = String(chosen);
  await selectWorkspace(chosen);
}

async function refreshPushButton() {
  const button = $("push");
  const current = await pushState().catch(() => "unsupported");
  button.dataset.state = current;
  button.disabled = current === "unsupported";
  button.textContent = current === "on" ? "Turn push notifications off" : "Enable push notifications";
  if (current === "unsupported") $("push-status").textContent = "This browser has no Web Push.";
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  setToken(value);
  signIn();
});

$("sign-out").addEventListener("click", async () => {
  // Pushes to this browser are for the user signing out: stop them while the token works.
  if ((await pushState().catch(() => "off")) === "on") await disablePush();
  clearToken();
  sessionStorage.removeItem(WORKSPACE_KEY);
  showSignedOut("Signed out.");
});

$("workspace").addEventListener("change", (event) => selectWorkspace(Number(event.target.value)));

$("new-task").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const assignee = $("new-assignee").value.trim();
  const fields = { title: $("new-title").value, status: $("new-status").value };
  if (assignee) fields.assignee_id = Number(assignee);
  $("create-task").disabled = true;
  try {
    await board.create(fields);
    form.reset();
    showMessage("");
    $("new-title").focus();
  } catch (error) {
    showMessage(`Could not add the task: ${error.message}`);
  } finally {
    $("create-task").disabled = false;
  }
});

$("push").addEventListener("click", async () => {
  const button = $("push");
  button.disabled = true;
  $("push-status").textContent = "…";
  const result = button.dataset.state === "on" ? await disablePush() : await enablePush();
  $("push-status").textContent = result.message;
  $("push-status").dataset.ok = String(result.ok);
  await refreshPushButton();
});

if (token()) signIn();
else showSignedOut();
