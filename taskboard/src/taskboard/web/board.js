// The task table of one workspace: loaded whole, then kept current one task at a time
// from the live events. User text goes into the DOM as text nodes only.

import { api, ApiError } from "./api.js";

const STATUSES = [
  ["open", "open"],
  ["in_progress", "in progress"],
  ["done", "done"],
];

export class Board {
  constructor({ rows, empty, onError }) {
    this.rows = rows;
    this.empty = empty;
    this.onError = onError;
    this.workspaceId = null;
    this.me = null;
    this.tasks = new Map();
    this.drawn = new Map(); // task id -> { version, row }: rows are redrawn only when changed
  }

  async load(workspaceId, me) {
    this.workspaceId = workspaceId;
    this.me = me;
    const listing = await api("GET", `${this.base()}?limit=100&sort=-id`);
    if (workspaceId !== this.workspaceId) return; // another workspace was picked meanwhile
    this.tasks = new Map(listing.items.map((task) => [task.id, task]));
    this.drawn = new Map();
    this.render();
  }

  clear() {
    this.workspaceId = null;
    this.tasks = new Map();
    this.render();
  }

  base() {
    return `/api/workspaces/${this.workspaceId}/tasks`;
  }

  /** Bring one task up to date after an event about it (a newer version wins). */
  async refreshTask(taskId, deleted = false) {
    const workspaceId = this.workspaceId;
    if (deleted) {
      this.tasks.delete(taskId);
      this.render();
      return;
    }
    let task;
    try {
      task = await api("GET", `${this.base()}/${taskId}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.tasks.delete(taskId);
        this.render();
        return;
      }
      throw error;
    }
    if (workspaceId !== this.workspaceId) return;
    this.upsert(task);
  }

  upsert(task) {
    const known = this.tasks.get(task.id);
    if (known && known.version > task.version) return;
    this.tasks.set(task.id, task);
    this.render();
  }

  async create(fields) {
    const task = await api("POST", this.base(), fields);
    this.upsert(task);
    return task;
  }

  async changeStatus(task, status) {
    try {
      const changed = await api("PATCH", `${this.base()}/${task.id}`, { status }, {
        headers: { "If-Match": `"${task.version}"` },
      });
      this.upsert(changed);
    } catch (error) {
      this.onError(`Could not change "${task.title}": ${error.message}`);
      await this.refreshTask(task.id).catch(() => {});
    }
  }

  /** Point at one task (a push notification's link names it). */
  highlight(taskId) {
    const row = this.drawn.get(taskId)?.row;
    if (!row) return;
    row.classList.add("highlight");
    row.scrollIntoView({ block: "center" });
  }

  render() {
    const ordered = [...this.tasks.values()].sort((a, b) => b.id - a.id);
    const drawn = new Map();
    for (const task of ordered) {
      const known = this.drawn.get(task.id);
      const row = known && known.version === task.version ? known.row : this.row(task);
      drawn.set(task.id, { version: task.version, row });
    }
    this.drawn = drawn;
    this.rows.replaceChildren(...[...drawn.values()].map((entry) => entry.row));
    this.empty.hidden = ordered.length > 0 || this.workspaceId === null;
  }

  row(task) {
    const tr = document.createElement("tr");
    tr.dataset.taskId = String(task.id);
    const title = document.createElement("td");
    title.className = "title";
    title.textContent = task.title;
    const status = document.createElement("td");
    status.append(this.statusPicker(task));
    const assignee = document.createElement("td");
    assignee.className = "assignee";
    assignee.textContent = this.assigneeName(task.assignee_id);
    tr.append(title, status, assignee);
    return tr;
  }

  statusPicker(task) {
    const select = document.createElement("select");
    select.className = `status status-${task.status}`;
    select.setAttribute("aria-label", `Status of ${task.title}`);
    for (const [value, label] of STATUSES) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      option.selected = value === task.status;
      select.append(option);
    }
    select.addEventListener("change", () => this.changeStatus(task, select.value));
    return select;
  }

  assigneeName(assigneeId) {
    if (assigneeId === null || assigneeId === undefined) return "—";
    if (this.me && assigneeId === this.me.id) return `you (${this.me.name})`;
    return `user #${assigneeId}`;
  }
}
