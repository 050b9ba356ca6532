// The notification bell: the unread count (refreshed a moment after each live event and
// by a slow poll), a dropdown of the newest notifications, mark read and mark all read.

import { api } from "./api.js";

const POLL_MS = 30_000;
// The feed is written by a consumer of the same events, a little after the stream shows
// them: look again a few times after the last event.
const AFTER_EVENT_MS = [400, 1500, 4000];
const PAGE = 20;

export class Bell {
  constructor({ button, badge, panel, list, empty, markAll, onError, onOpenNotification }) {
    this.button = button;
    this.badge = badge;
    this.panel = panel;
    this.list = list;
    this.empty = empty;
    this.onError = onError;
    this.onOpenNotification = onOpenNotification ?? (() => {});
    this.unread = 0;
    this.poll = null;
    this.soon = [];
    this.active = false;
    button.addEventListener("click", () => this.toggle());
    markAll.addEventListener("click", () => this.markAllRead());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.panel.hidden) this.close();
    });
    document.addEventListener("click", (event) => {
      if (!this.panel.hidden && !this.panel.parentElement.contains(event.target)) this.close();
    });
  }

  start() {
    this.active = true;
    this.refresh();
    this.poll = setInterval(() => this.refresh(), POLL_MS);
  }

  stop() {
    this.active = false;
    clearInterval(this.poll);
    this.soon.forEach(clearTimeout);
    this.close();
    this.show(0);
  }

  /** Refresh shortly after an event: a burst of events costs one round of requests. */
  refreshSoon() {
    this.soon.forEach(clearTimeout);
    this.soon = AFTER_EVENT_MS.map((ms) => setTimeout(() => this.refresh(), ms));
  }

  async refresh() {
    if (!this.active) return;
    try {
      const { unread } = await api("GET", "/api/me/notifications/unread-count");
      if (!this.active) return;
      const changed = unread !== this.unread;
      this.button.title = "";
      this.show(unread);
      if (changed && !this.panel.hidden) await this.loadList();
    } catch (error) {
      this.button.title = `Notifications are unavailable: ${error.message}`;
    }
  }

  show(unread) {
    this.unread = unread;
    this.badge.textContent = unread > 99 ? "99+" : String(unread);
    this.badge.hidden = unread === 0;
    this.button.setAttribute(
      "aria-label",
      unread === 0 ? "Notifications, none unread" : `Notifications, ${unread} unread`,
    );
  }

  async toggle() {
    if (!this.panel.hidden) {
      this.close();
      return;
    }
    this.panel.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    await this.loadList();
  }

  close() {
    this.panel.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
  }

  async loadList() {
    try {
      const page = await api("GET", `/api/me/notifications?limit=${PAGE}`);
      this.list.replaceChildren(...page.items.map((item) => this.item(item)));
      this.empty.hidden = page.items.length > 0;
    } catch (error) {
      this.onError(`Could not load notifications: ${error.message}`);
    }
  }

  item(notification) {
    const li = document.createElement("li");
    li.className = notification.read_at ? "read" : "unread";
    li.dataset.notificationId = notification.id;
    const title = document.createElement("button");
    title.type = "button";
    title.className = "link notification-title";
    title.textContent = notification.title;
    title.addEventListener("click", () => {
      this.close();
      this.onOpenNotification(notification);
      if (!notification.read_at) this.markRead(notification.id);
    });
    const body = document.createElement("p");
    body.className = "notification-body";
    body.textContent = notification.body;
    const when = document.createElement("time");
    when.dateTime = notification.created_at;
    when.textContent = new Date(notification.created_at).toLocaleString();
    li.append(title, body, when);
    if (!notification.read_at) {
      const mark = document.createElement("button");
      mark.type = "button";
      mark.className = "link mark-read";
      mark.textContent = "Mark read";
      mark.setAttribute("aria-label", `Mark read: ${notification.title}`);
      mark.addEventListener("click", () => this.markRead(notification.id));
      li.append(mark);
    }
    return li;
  }

  async markRead(id) {
    try {
      await api("POST", `/api/me/notifications/${encodeURIComponent(id)}/read`);
      await this.afterMarking();
    } catch (error) {
      this.onError(`Could not mark it read: ${error.message}`);
    }
  }

  async markAllRead() {
    try {
      await api("POST", "/api/me/notifications/read-all");
      await this.afterMarking();
    } catch (error) {
      this.onError(`Could not mark them read: ${error.message}`);
    }
  }

  async afterMarking() {
    await this.refresh();
    if (!this.panel.hidden) await this.loadList();
  }
}
