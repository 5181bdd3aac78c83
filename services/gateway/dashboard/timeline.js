// An execution's timeline: every event of its log, newest first, each with its seq, time,
// kind and step, added as the WebSocket hands it on (socket.js hands on each seq once, in
// order, across reconnects). The events before the snapshot the page opened at are read
// from the log on request ("Show the N earlier events"), so the whole run can be read.
//
// Bounded however long the run: of each step attempt's progress reports only the latest
// PROGRESS_ROWS stay on the page, the older ones are folded into one row that counts them
// (a run may log 10,000), and past MAX_ROWS rows the oldest leave the page, saying so.

import { fill, h, setText } from "./dom.js";
import { duration, percent, time } from "./format.js";

export const PROGRESS_ROWS = 50;
const MAX_ROWS = 2000;

function plural(count, noun) {
  return `${count.toLocaleString("en")} ${noun}${count === 1 ? "" : "s"}`;
}

/** The step an event is about, or "" for the workflow's own events. */
function stepOf(event) {
  return event.step ?? event.step_name ?? "";
}

export function describeEvent(event) {
  switch (event.event) {
    case "step_queued":
      return `${event.step} · attempt ${event.attempt}${event.attempt > 1 ? " (retry)" : ""} · waiting for a ${event.handler ?? ""} runner`;
    case "step_started": {
      const waited = Number(event.queued_seconds);
      return [
        `${event.step} · attempt ${event.attempt}`,
        event.runner_id ? `on ${event.runner_id}` : "",
        waited >= 1 ? `after ${duration(waited)} in the queue` : "",
      ]
        .filter(Boolean)
        .join(" · ");
    }
    case "step_progress": {
      const p = event.progress ?? {};
      return `${event.step_name} · ${percent(p.percentage)}${p.message ? ` · ${p.message}` : ""}`;
    }
    case "step_finished":
      return `${event.step} · ${event.status}${event.error?.message ? ` · ${event.error.message}` : ""}`;
    case "workflow_failed":
      return event.error?.message ?? "";
    case "workflow_cancelled":
      return event.reason ?? "";
    case "workflow_waiting":
      return event.step ? `before ${event.step}` : "";
    case "workflow_retried": {
      const again = Array.isArray(event.steps) ? event.steps : [];
      return [event.from_step ? `from ${event.from_step}` : "", again.length > 0 ? `runs again: ${again.join(", ")}` : ""]
        .filter(Boolean)
        .join(" · ");
    }
    case "workflow_advanced": {
      const keys = Object.keys(event.data ?? {}).sort();
      return keys.length > 0 ? `with ${keys.join(", ")}` : "";
    }
    default:
      return "";
  }
}

/**
 * The timeline's card. `loadEarlier(untilSeq)` resolves to the logged events 1…untilSeq,
 * oldest first. Returns {element, snapshot(seq, status), resuming(seq), add(event)}.
 */
export function createTimeline({ loadEarlier }) {
  const count = h("span", {}, "0");
  const list = h("ol", { class: "log", reversed: true, "aria-label": "Events, newest first" });
  const showProgress = h("input", { type: "checkbox", checked: true });
  const element = h(
    "details",
    { class: "card log-card", open: true },
    h("summary", {}, "Timeline (", count, " events)"),
    h(
      "div",
      { class: "log-tools" },
      h("label", { class: "check" }, showProgress, " Progress reports"),
      h(
        "span",
        { class: "hint" },
        `Newest first; the latest ${PROGRESS_ROWS} progress reports of each attempt are kept.`,
      ),
    ),
    list,
  );
  showProgress.addEventListener("change", () => list.classList.toggle("hide-progress", !showProgress.checked));

  let received = 0; // events this timeline was given, folded ones included
  let newest = null; // the highest seq shown
  let snapshotSeq = null;
  let earlierLoaded = false;
  let rows = 0; // rows on the page (notes and fold counters included)
  let trimmed = null; // the note that says older rows left the page
  // Per step attempt ("step\u0000attempt"): its progress rows on the page, oldest first, and
  // the row counting those folded.
  const progress = new Map();

  function counted() {
    setText(count, received.toLocaleString("en"));
  }

  function row(event) {
    const step = stepOf(event);
    return h(
      "li",
      { dataset: step ? { seq: event.seq, event: event.event, step } : { seq: event.seq, event: event.event } },
      h("span", { class: "log-seq" }, `#${event.seq}`),
      h("time", { datetime: event.timestamp, title: event.timestamp }, time(event.timestamp)),
      h("span", { class: "log-event" }, event.event),
      h("span", { class: "log-detail" }, describeEvent(event)),
    );
  }

  function attemptOf(event) {
    const key = `${event.step_name}\u0000${event.attempt ?? ""}`;
    let entry = progress.get(key);
    if (entry === undefined) {
      entry = { step: event.step_name, attempt: event.attempt, shown: [], folded: 0, counter: null };
      progress.set(key, entry);
    }
    return entry;
  }

  function foldCounter(entry) {
    if (entry.counter === null) {
      entry.counter = h("li", { class: "log-folded", dataset: { step: entry.step, attempt: entry.attempt ?? "" } });
      rows += 1;
    }
    entry.counter.dataset.folded = String(entry.folded);
    const whose = `${entry.step}${entry.attempt ? ` (attempt ${entry.attempt})` : ""}`;
    setText(entry.counter, `${plural(entry.folded, "earlier progress report")} of ${whose} folded`);
    return entry.counter;
  }

  /** Rows past MAX_ROWS leave from the bottom (the oldest), and a note there says so. */
  function trim() {
    while (rows > MAX_ROWS) {
      const gone = trimmed === null ? list.lastElementChild : trimmed.previousElementSibling;
      if (gone === null) break;
      for (const entry of progress.values()) {
        if (entry.shown[0] === gone) entry.shown.shift();
        if (entry.counter === gone) entry.counter = null;
      }
      gone.remove();
      rows -= 1;
      if (trimmed === null) {
        trimmed = h("li", { class: "log-note", dataset: { trimmed: "" } }, `Older entries left the page (it keeps ${MAX_ROWS}).`);
        list.append(trimmed);
      }
    }
  }

  /** A live event, after every one shown: at the top. */
  function add(event) {
    if (newest !== null && event.seq <= newest) return; // already shown
    newest = event.seq;
    received += 1;
    counted();
    const entry = row(event);
    list.prepend(entry);
    rows += 1;
    if (event.event === "step_progress") {
      const attempt = attemptOf(event);
      attempt.shown.push(entry);
      if (attempt.shown.length > PROGRESS_ROWS) {
        const oldest = attempt.shown.shift();
        attempt.folded += 1;
        if (attempt.counter === null) {
          oldest.replaceWith(foldCounter(attempt));
        } else {
          oldest.remove();
          foldCounter(attempt);
        }
        rows -= 1;
      }
    }
    trim();
  }

  /** The events before the snapshot, oldest first: below everything, newest of them first. */
  function addEarlier(events) {
    for (const event of [...events].reverse()) {
      if (snapshotSeq === null || event.seq > snapshotSeq) continue;
      received += 1;
      if (event.event === "step_progress") {
        const attempt = attemptOf(event);
        if (attempt.shown.length >= PROGRESS_ROWS) {
          attempt.folded += 1;
          const counter = attempt.counter;
          const fresh = counter === null;
          foldCounter(attempt);
          if (fresh) list.append(attempt.counter);
          continue;
        }
        const entry = row(event);
        attempt.shown.unshift(entry);
        list.append(entry);
      } else {
        list.append(row(event));
      }
      rows += 1;
    }
    if (trimmed !== null) list.append(trimmed);
    counted();
    trim();
  }

  function note(text, dataset) {
    const entry = h("li", { class: "log-note", dataset }, text);
    list.prepend(entry);
    rows += 1;
    return entry;
  }

  return {
    element,

    /** Where the page's feed began: the status at `seq`, with a way to read what came before. */
    snapshot(seq, status) {
      if (snapshotSeq !== null) return;
      snapshotSeq = seq;
      if (newest === null || seq > newest) newest = seq;
      const entry = note(`Snapshot at event #${seq}: ${status}`, { snapshotSeq: seq });
      if (seq < 1) return;
      const button = h("button", { type: "button", class: "link-button" }, `Show the ${plural(seq, "earlier event")}`);
      const state = h("span", { class: "log-earlier-state", role: "status" });
      entry.append(" · ", button, state);
      button.addEventListener("click", async () => {
        if (earlierLoaded) return;
        button.disabled = true;
        setText(state, " reading the log…");
        try {
          const events = await loadEarlier(seq);
          if (earlierLoaded) return;
          earlierLoaded = true;
          addEarlier(events);
          entry.dataset.earlierLoaded = String(events.length);
          fill(entry, `Snapshot at event #${seq}: ${status} · events #1–#${seq}, read from the log, below`);
        } catch (error) {
          setText(state, ` not read: ${error.message}`);
          button.disabled = false;
        }
      });
    },

    /** The feed dropped and resumes after `seq`: a note where the gap would have been. */
    resuming(seq) {
      note(`Reconnecting after event #${seq}`, { resumeSeq: seq });
    },

    add,
  };
}
