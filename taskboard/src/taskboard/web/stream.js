// A workspace's live events, read with fetch() and a ReadableStream: EventSource cannot
// send the Authorization header. The parser follows the HTML standard's event-stream
// rules (id/event/data/retry fields, comments, any of CRLF, LF, CR as line ends); the
// stream reconnects with Last-Event-ID and a growing, jittered delay.

/** Splits event-stream text, given in chunks of any size, into frames. */
export class FrameParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.lastEventId = null;
    this.retry = null;
  }

  push(chunk) {
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      if (end === -1) return;
      const cr = this.buffer[end] === "\r";
      if (cr && end === this.buffer.length - 1) return; // a LF may follow in the next chunk
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + (cr && this.buffer[end + 1] === "\n" ? 2 : 1));
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's heartbeat
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  dispatch() {
    const data = this.data;
    const event = this.event || "message";
    this.data = [];
    this.event = "";
    if (data.length === 0) return;
    this.onFrame({ id: this.lastEventId, event, data: data.join("\n") });
  }
}

const MAX_DELAY_MS = 30_000;

/** Why a stream stopped for good: the server said so, or will never serve this caller. */
export class StreamClosed extends Error {
  constructor(code, message) {
    super(message);
    this.code = code; // "unauthorized" | "not_member" | "revoked"
  }
}

/**
 * One workspace's stream, kept open until stop(): `onEvent(type, event, id)` for each
 * event, `onReset()` when the server cannot resume (refetch everything), `onOpen()` on
 * each connection, `onState(state, detail)` with "connecting" | "live" | "retrying" |
 * "stopped", and `onClosed(code, reason)` when it stops by itself: code "revoked" (the
 * server ended it: no longer a member), "not_member" (404) or "unauthorized" (401).
 */
export class LiveStream {
  constructor(url, { token, onEvent, onReset, onOpen, onState, onClosed }) {
    this.url = url;
    this.token = token;
    this.onEvent = onEvent;
    this.onReset = onReset ?? (() => {});
    this.onOpen = onOpen ?? (() => {});
    this.onState = onState ?? (() => {});
    this.onClosed = onClosed ?? (() => {});
    this.lastEventId = null;
    this.retryMs = 2000;
    this.failures = 0;
    this.controller = null;
    this.stopped = false;
  }

  start() {
    this.run().catch((error) => this.finish("error", String(error)));
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
    this.onState("stopped", "");
  }

  finish(code, reason) {
    if (this.stopped) return;
    this.stopped = true;
    this.controller?.abort();
    this.onState("stopped", reason);
    this.onClosed(code, reason);
  }

  async run() {
    while (!this.stopped) {
      let wait = null;
      try {
        wait = await this.connect();
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof StreamClosed) {
          this.finish(error.code, error.message);
          return;
        }
      }
      if (this.stopped) return;
      const delay = wait ?? this.backoff();
      this.onState("retrying", `reconnecting in ${Math.round(delay / 1000)} s`);
      await sleep(delay);
    }
  }

  backoff() {
    this.failures += 1;
    const ceiling = Math.min(MAX_DELAY_MS, this.retryMs * 2 ** (this.failures - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** One connection, read to its end; returns a delay the server asked for, if any. */
  async connect() {
    this.controller = new AbortController();
    this.onState("connecting", "");
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${this.token}` };
    if (this.lastEventId !== null) headers["Last-Event-ID"] = this.lastEventId;
    const response = await fetch(this.url, {
      headers,
      signal: this.controller.signal,
      cache: "no-store",
    });
    if (response.status === 401) throw new StreamClosed("unauthorized", "the token is not valid");
    if (response.status === 404) {
      throw new StreamClosed("not_member", "you are not a member of this workspace");
    }
    if (response.status === 503) {
      await response.body?.cancel();
      // At least what the server asked, plus the growing, jittered backoff: clients turned
      // away together must not all come back in the same second.
      const seconds = Number(response.headers.get("Retry-After"));
      const asked = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0;
      return asked + this.backoff();
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      return null;
    }
    this.failures = 0;
    this.onState("live", "");
    this.onOpen(this.lastEventId === null);
    const parser = new FrameParser((frame) => this.frame(frame));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) return null;
        parser.push(value);
        if (parser.retry !== null) this.retryMs = parser.retry;
      }
    } finally {
      reader.releaseLock();
    }
  }

  frame(frame) {
    if (this.stopped) return;
    if (frame.id !== null) this.lastEventId = frame.id;
    if (frame.event === "revoked") {
      this.finish("revoked", "you are no longer a member of this workspace");
      return;
    }
    if (frame.event === "reset") {
      this.onReset();
      return;
    }
    let event;
    try {
      event = JSON.parse(frame.data);
    } catch {
      return; // not an event this page knows how to read
    }
    this.onEvent(frame.event, event, frame.id);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
