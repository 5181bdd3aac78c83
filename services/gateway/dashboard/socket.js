// The live feed of one execution over the legacy WebSocket /ws/{id}, resumed by itself.
//
// The first connection takes the snapshot (the status document at seq N) and then the events
// after N. Every event carries its seq; the last one handed on is kept, and a dropped
// connection is opened again with ?after_seq=<that seq>, with a growing, jittered delay, so
// each event is handed on exactly once and in order. An event at or below the kept seq is a
// repeat and is dropped; one past the next seq means something was lost, and the feed resumes
// from the kept seq instead of showing a gap. The server closes normally (1000) after the
// terminal event; that close, and 4404 (no such execution), are the only ends.
//
// An end is not always the last word: a failed or cancelled execution may be retried, and its
// log goes on. `resume()` (after the page retried it) opens the feed again from the kept seq;
// when nothing came after the end (the retry was refused), the gateway closes normally at
// once, and that is the end again.
//
// A browser cannot set headers on a WebSocket: each connection asks the gateway for a fresh
// watch token first (valid 15 minutes, for this execution only) and carries it in the query.
// A tab signed in with a watch token (which may not mint another) carries that one; when it
// expires (close 4401) the tab is signed out.

import { api } from "./api.js";
import { signOut, token, watchedExecution } from "./auth.js";
import { isTerminalEvent, TERMINAL } from "./model.js";

const CLOSE_NORMAL = 1000;
const CLOSE_NOT_FOUND = 4404;
const CLOSE_TOKEN_EXPIRED = 4401;
// A close code of our own, for a connection dropped because it skipped an event.
const CLOSE_GAP = 4000;

export class ExecutionSocket {
  /**
   * @param {string} executionId
   * @param {{onSnapshot(status: object, seq: number): void, onEvent(event: object): void,
   *          onState(state: {phase: string, detail?: string, url?: string, retryAt?: number}): void,
   *          onServerError(error: object): void}} handlers
   */
  constructor(executionId, handlers, { minDelayMs = 500, maxDelayMs = 15000 } = {}) {
    this.executionId = executionId;
    this.handlers = handlers;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.lastSeq = null;
    this.finished = false;
    this.stopped = false;
    this.failures = 0;
    this.connections = 0;
    this.ws = null;
    this.timer = null;
    // Set by resume(): the next connection follows an end (reopened), and until an event
    // comes a normal close means nothing followed it (afterEnd).
    this.reopened = false;
    this.afterEnd = false;
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  /** After an end: follows on from the last seq handed on, for what a retry logged since. */
  resume() {
    if (this.stopped || !this.finished) return;
    this.finished = false;
    this.failures = 0;
    this.reopened = true;
    this.afterEnd = true;
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    if (this.ws !== null && this.ws.readyState <= WebSocket.OPEN) {
      this.ws.close(1000, "dashboard left the execution");
    }
    this.ws = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const base = `${scheme}//${location.host}/ws/${encodeURIComponent(this.executionId)}`;
    return this.lastSeq === null ? base : `${base}?after_seq=${this.lastSeq}`;
  }

  async connect() {
    if (this.stopped || this.finished) return;
    clearTimeout(this.timer);
    const attempt = (this.attempt = (this.attempt ?? 0) + 1);
    let ticket;
    try {
      ticket = this.ownWatchToken() ?? (await api.watchToken(this.executionId));
    } catch (error) {
      if (attempt !== this.attempt || this.stopped) return;
      if (error.status === 404) {
        this.closed(CLOSE_NOT_FOUND, error.message);
      } else if (error.status === 401) {
        this.stopped = true; // signed out: the page asks for a token
        this.handlers.onState({ phase: "signed-out", detail: error.message });
      } else {
        this.closed(0, error.message);
      }
      return;
    }
    // Stopped, or overtaken by a newer attempt, while the ticket was on its way.
    if (attempt !== this.attempt || this.stopped || this.finished) return;
    const url = this.url();
    const separator = url.includes("?") ? "&" : "?";
    const ws = new WebSocket(`${url}${separator}access_token=${encodeURIComponent(ticket.watch_token)}`);
    this.ws = ws;
    this.connections += 1;
    const resumed = this.lastSeq !== null;
    // Opened again after an end by resume(), not after a drop: no gap to mark.
    const reopened = this.reopened;
    this.reopened = false;
    this.handlers.onState({ phase: "connecting", url, resumed, reopened });
    let received = false;
    ws.addEventListener("open", () => {
      if (this.ws === ws) this.handlers.onState({ phase: "live", url, resumed });
    });
    ws.addEventListener("message", (message) => {
      if (this.ws !== ws) return;
      if (!received) {
        received = true;
        this.failures = 0;
      }
      this.receive(ws, message.data);
    });
    ws.addEventListener("close", (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(close.code, close.reason);
    });
  }

  /** The tab's own token, when it is a watch token: {watch_token}; null otherwise. */
  ownWatchToken() {
    return watchedExecution() === null ? null : { watch_token: token() };
  }

  receive(ws, data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // not something the contract sends
    }
    if (message.event === "snapshot") {
      this.lastSeq = message.seq;
      this.handlers.onSnapshot(message.status, message.seq);
      this.finished = TERMINAL.has(message.status?.status);
      return;
    }
    if (message.event === "error" || typeof message.seq !== "number") {
      this.handlers.onServerError(message.error ?? { message: "unknown error" });
      return;
    }
    if (this.lastSeq !== null && message.seq <= this.lastSeq) return; // a repeat
    if (this.lastSeq !== null && message.seq > this.lastSeq + 1) {
      // Something between was not received: resume from what was, rather than skip it.
      ws.close(CLOSE_GAP, `expected seq ${this.lastSeq + 1}`);
      return;
    }
    this.lastSeq = message.seq;
    this.afterEnd = false;
    // An event after an end (a retry's) means the run goes on.
    this.finished = isTerminalEvent(message.event);
    this.handlers.onEvent(message);
  }

  closed(code, reason) {
    if (this.stopped) return;
    if (this.finished || (code === CLOSE_NORMAL && this.afterEnd)) {
      this.finished = true;
      this.handlers.onState({ phase: "finished" });
      return;
    }
    if (code === CLOSE_TOKEN_EXPIRED && this.ownWatchToken() !== null) {
      // The tab's watch token ended; only whoever gave it can give another.
      this.stopped = true;
      this.handlers.onState({ phase: "signed-out", detail: reason });
      signOut(reason || "the watch token expired");
      return;
    }
    if (code === CLOSE_NOT_FOUND) {
      this.stopped = true;
      this.handlers.onState({ phase: "not-found", detail: reason });
      return;
    }
    // Exponential backoff with jitter, so many dashboards do not come back all at once.
    const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.failures);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.failures += 1;
    this.handlers.onState({
      phase: "reconnecting",
      detail: reason || `closed with code ${code}`,
      retryAt: Date.now() + delay,
    });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Back online: try at once instead of waiting out the delay. */
  reconnectNow() {
    if (this.ws === null && !this.stopped && !this.finished) this.connect();
  }
}
