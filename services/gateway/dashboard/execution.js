// The view of one execution (#/executions/{id}): its overall state and progress, what the
// user may do to it (advance, cancel, retry: actions.js), one card per step (live bar,
// message, current task, ETA, attempts), the history of every attempt, the final output, and
// the timeline of its events (timeline.js), all kept live over the WebSocket.
//
// Steps that may run side by side (a workflow whose steps name what they wait for) are drawn
// in stages, the steps of one stage beside each other, and on a shared time axis (lanes.js);
// a straight-line workflow looks as it always did.

import { createActions } from "./actions.js";
import { api, ApiError } from "./api.js";
import { mayDrive } from "./auth.js";
import { fill, h, progressBar, setText } from "./dom.js";
import { duration, eta, percent, time } from "./format.js";
import { createLanes, ranSideBySide } from "./lanes.js";
import {
  applyEvent,
  applySnapshot,
  applyStepsListing,
  completedSteps,
  createModel,
  currentAttempt,
  history,
  liveSteps,
  overallPercentage,
  queueWait,
  runningStep,
  stages,
  stepPercentage,
  stepState,
  TERMINAL,
} from "./model.js";
import { ExecutionSocket } from "./socket.js";
import { createTimeline } from "./timeline.js";

const PREVIEW_CONTEXT_CHARS = 4000;

/** "a", "a and b", "a, b and c". */
function names(list) {
  return list.length < 2 ? list.join("") : `${list.slice(0, -1).join(", ")} and ${list.at(-1)}`;
}

function stepCard(step) {
  const bar = progressBar(`${step.name} progress`);
  const refs = {
    badge: h("span", { class: "badge" }),
    percentage: h("span", { class: "step-percentage" }),
    message: h("dd", { class: "step-message" }),
    task: h("dd", { class: "step-task" }),
    eta: h("dd", { class: "step-eta" }),
    attempts: h("dd", { class: "step-attempts" }),
    duration: h("dd", { class: "step-duration" }),
  };
  const element = h(
    "li",
    { class: "step", dataset: { step: step.name } },
    h(
      "div",
      { class: "step-head" },
      h("span", { class: "step-order", "aria-hidden": "true" }, step.order),
      h("h3", { class: "step-name" }, step.name),
      refs.badge,
      refs.percentage,
    ),
    bar.element,
    h(
      "dl",
      { class: "step-meta" },
      h("div", { class: "meta-message" }, h("dt", {}, "Message"), refs.message),
      h("div", {}, h("dt", {}, "Current task"), refs.task),
      h("div", {}, h("dt", {}, "ETA"), refs.eta),
      h("div", {}, h("dt", {}, "Attempts"), refs.attempts),
      h("div", {}, h("dt", {}, "Duration"), refs.duration),
    ),
  );
  return { element, bar, refs };
}

/** A finished step's output in a line, for steps that report no message: "total_pages: 24". */
function outputLine(output) {
  if (!output || typeof output !== "object") return "";
  return Object.entries(output)
    .filter(([key, value]) => key !== "success" && ["string", "number", "boolean"].includes(typeof value) && String(value).length <= 40)
    .slice(0, 4)
    .map(([key, value]) => `${key}: ${value}`)
    .join(" · ");
}

function elapsed(attempt, now) {
  if (attempt.status === "queued") {
    // Nothing runs it yet: how long it has waited for a runner, counting.
    const waited = queueWait(attempt, now);
    return waited === null ? "queued" : `queued ${duration(waited)} …`;
  }
  if (attempt.duration_seconds !== null && attempt.duration_seconds !== undefined) {
    return duration(attempt.duration_seconds);
  }
  if (attempt.status === "running" && attempt.started_at) {
    return `${duration((now - new Date(attempt.started_at).getTime()) / 1000)} …`;
  }
  return "—";
}

function resultView(model) {
  const context = model.context ?? {};
  const sections = Array.isArray(context.sections) ? context.sections : null;
  const facts = [];
  const fact = (label, value) => {
    if (value !== undefined && value !== null && value !== "") facts.push(h("div", {}, h("dt", {}, label), h("dd", {}, value)));
  };
  fact("Document", context.nombre_documento ?? context.document?.nombre_documento);
  fact("Pages", context.total_pages ?? context.text?.pages);
  fact("Sections found", context.sections_found);
  fact("Characters", context.text?.characters);
  const parts = [];
  if (facts.length > 0) parts.push(h("dl", { class: "facts" }, facts));
  if (sections !== null && sections.length > 0) {
    parts.push(
      h(
        "table",
        { class: "sections" },
        h("caption", {}, `Sections${context.sections_found > sections.length ? ` (first ${sections.length} of ${context.sections_found})` : ""}`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Title"), h("th", { scope: "col" }, "Page"))),
        h(
          "tbody",
          {},
          sections.map((s) =>
            h("tr", { class: `level-${Number(s.level) || 1}` }, h("td", { class: "section-title" }, s.title), h("td", { class: "num" }, s.page)),
          ),
        ),
      ),
    );
  }
  if (typeof context.text_preview === "string" && context.text_preview) {
    parts.push(h("h4", {}, "Text preview"), h("pre", { class: "preview" }, context.text_preview));
  }
  if (parts.length === 0) {
    // Another workflow: its context as it is (text only, cut to a readable size).
    const text = JSON.stringify(context, null, 2);
    parts.push(h("pre", { class: "preview" }, text.length > PREVIEW_CONTEXT_CHARS ? `${text.slice(0, PREVIEW_CONTEXT_CHARS)}…` : text));
  }
  return parts;
}

export function openExecution(container, executionId, { onChange } = {}) {
  const model = createModel(executionId);
  let socket = null;
  let closed = false;
  let frame = null;
  let stepCards = new Map();
  let estimate = null; // {seconds, at}: the server's workflow-level ETA and when it was read
  let estimateTimer = null;
  let phase = { phase: "connecting" };
  // A passing problem (the gateway's error message), until the next event.
  let notice = null;
  const actions = createActions(executionId, {
    onSettled: () => scheduleRender(),
    // The feed stopped at the end it retried: what the retry logged follows on from there.
    onRetried: () => socket?.resume(),
  });
  const timeline = createTimeline({ loadEarlier: (seq) => api.loggedEvents(executionId, 0, seq) });
  const lanes = createLanes();
  // Once steps were seen running side by side, the lanes stay on the page.
  let sideBySide = false;

  const overallBar = progressBar("Overall progress");
  const refs = {
    title: h("h2", { id: "execution-title" }, "Execution"),
    badge: h("span", { class: "badge status-pending", id: "execution-status", "aria-live": "polite" }, "loading"),
    // Only the phase is announced; the event counter beside it changes too often for that.
    connection: h("p", { class: "connection" }),
    phase: h("span", { role: "status" }, "Connecting…"),
    seq: h("span", { class: "connection-seq" }),
    id: h("code", {}, executionId),
    created: h("time", {}),
    mode: h("span", {}),
    retries: h("span", { class: "retries", hidden: true }),
    running: h("p", { class: "running-now", "aria-live": "polite", hidden: true }),
    percentage: h("span", { class: "overall-percentage" }, "0 %"),
    stepsDone: h("span", {}),
    eta: h("span", {}),
    problem: h("div", { class: "problem", role: "alert", hidden: true }),
    result: h("section", { class: "card result", "aria-labelledby": "result-title", hidden: true }),
    steps: h("ol", { class: "steps", "aria-label": "Steps" }),
    history: h("tbody", {}),
  };
  const article = h(
    "article",
    { class: "execution", "aria-labelledby": "execution-title", dataset: { executionId } },
    h(
      "header",
      { class: "card execution-head" },
      h("div", { class: "title-row" }, refs.title, refs.badge),
      h("p", { class: "muted" }, "Execution ", refs.id, " · started ", refs.created, " · ", refs.mode, refs.retries),
      h("div", { class: "overall" }, overallBar.element),
      h(
        "p",
        { class: "overall-facts" },
        refs.percentage,
        h("span", { class: "sep", "aria-hidden": "true" }, "·"),
        refs.stepsDone,
        h("span", { class: "sep", "aria-hidden": "true" }, "·"),
        "ETA ",
        refs.eta,
      ),
      refs.running,
      refs.connection,
      actions.elements,
      refs.problem,
    ),
    refs.result,
    h("section", { class: "card", "aria-labelledby": "steps-title" }, h("h3", { id: "steps-title", class: "card-title" }, "Steps"), refs.steps),
    lanes.element,
    h(
      "section",
      { class: "card", "aria-labelledby": "history-title" },
      h("h3", { id: "history-title", class: "card-title" }, "History"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "history" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Step", "Status", "Attempt", "Queue wait", "Started", "Finished", "Duration"].map((label) => h("th", { scope: "col" }, label)),
            ),
          ),
          refs.history,
        ),
      ),
    ),
    timeline.element,
  );
  fill(refs.connection, refs.phase, refs.seq);
  fill(container, article);

  function scheduleRender() {
    if (frame === null && !closed) frame = requestAnimationFrame(render);
  }

  /** The step cards: one list in workflow order, or by stage where steps run side by side. */
  function layOutSteps(grouped) {
    const layout = (grouped ?? [model.steps]).map((g) => g.map((s) => s.name).join("\u0000")).join("\u0001");
    if (layout === refs.steps.dataset.layout) return;
    refs.steps.dataset.layout = layout;
    stepCards = new Map(model.steps.map((s) => [s.name, stepCard(s)]));
    refs.steps.classList.toggle("staged", grouped !== null);
    if (grouped === null) {
      fill(refs.steps, [...stepCards.values()].map((c) => c.element));
      return;
    }
    fill(
      refs.steps,
      grouped.map((group, i) => {
        const title = h(
          "h4",
          { class: "stage-title", id: `stage-${i + 1}-title` },
          `Stage ${i + 1}${group.length > 1 ? ` · ${group.length} steps side by side` : ""}`,
        );
        return h(
          "li",
          { class: "stage", dataset: { stage: i + 1 } },
          title,
          h(
            "ol",
            { class: group.length > 1 ? "stage-steps side-by-side" : "stage-steps", "aria-labelledby": title.id },
            group.map((s) => stepCards.get(s.name).element),
          ),
        );
      }),
    );
  }

  function renderSteps(now, grouped) {
    layOutSteps(grouped);
    for (const step of model.steps) {
      const card = stepCards.get(step.name);
      const state = stepState(model, step);
      const last = currentAttempt(step);
      const progress = last?.last_progress ?? null;
      const value = stepPercentage(step);
      card.element.dataset.state = state;
      card.bar.set(value, state);
      card.refs.badge.className = `badge state-${state}`;
      setText(card.refs.badge, state);
      setText(card.refs.percentage, percent(value));
      const queued = state === "queued" ? `Waiting for a runner${step.handler ? ` of ${step.handler}` : ""}` : "";
      setText(card.refs.message, queued || last?.error?.message || progress?.message || outputLine(last?.output_payload) || "—");
      setText(card.refs.task, progress?.current_task || "—");
      setText(
        card.refs.eta,
        state === "success" ? "done" : state === "running" ? eta(progress?.estimated_remaining_seconds) : "—",
      );
      setText(card.refs.attempts, step.attempts.length);
      setText(card.refs.duration, last ? elapsed(last, now) : "—");
    }
  }

  function renderHistory(now) {
    fill(
      refs.history,
      history(model).map((a) =>
        h(
          "tr",
          { dataset: { step: a.step_name, attempt: a.attempt, status: a.status } },
          h("th", { scope: "row" }, a.step_name),
          h("td", {}, h("span", { class: `badge state-${a.status}` }, a.status), a.error?.message ? h("span", { class: "cell-note" }, a.error.message) : null),
          h("td", { class: "num" }, a.attempt),
          h("td", { class: "num", title: a.queued_at ?? "" }, duration(queueWait(a, now))),
          h("td", {}, h("time", { datetime: a.started_at ?? "" }, time(a.started_at))),
          h("td", {}, h("time", { datetime: a.finished_at ?? "" }, time(a.finished_at))),
          // A queued attempt's wait is in its own column; it has not run at all yet.
          h("td", { class: "num" }, a.status === "queued" ? "—" : elapsed(a, now)),
        ),
      ),
    );
  }

  function overallEta(now) {
    if (TERMINAL.has(model.status)) return "—";
    if (estimate !== null && estimate.seconds !== null) {
      return eta(Math.max(0, estimate.seconds - (now - estimate.at) / 1000));
    }
    const running = runningStep(model);
    return eta((running && currentAttempt(running))?.last_progress?.estimated_remaining_seconds ?? null);
  }

  function renderConnection() {
    const { phase: name, detail, retryAt } = phase;
    refs.connection.dataset.phase = name;
    const texts = {
      connecting: "Connecting…",
      live: "Live",
      finished: "All events received",
      "not-found": "No such execution.",
      "signed-out": "Signed out; sign in again to follow it.",
      reconnecting: `Connection lost${detail ? ` (${detail})` : ""}; reconnecting…`,
    };
    setText(refs.phase, texts[name] ?? name);
    const seconds = name === "reconnecting" ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : null;
    const last = model.lastSeq === null ? "" : ` · last event #${model.lastSeq}`;
    setText(refs.seq, `${seconds === null ? "" : ` in ${seconds} s`}${last}`);
  }

  function problem() {
    if (phase.phase === "not-found") return `No execution with id ${executionId}.`;
    if (model.status === "failed" && model.error) {
      const where = model.error.step_name ? ` in ${model.error.step_name}` : "";
      return `Failed${where}: ${model.error.message || model.error.reason}`;
    }
    if (model.status === "cancelled") {
      // Live, the event's reason; opened afterwards, the status document's error says it.
      const reason = model.cancelReason ?? model.error?.message;
      return `Cancelled${reason ? `: ${reason}` : ""}.`;
    }
    return notice;
  }

  function render() {
    frame = null;
    if (closed) return;
    const now = Date.now();
    const value = overallPercentage(model);
    article.dataset.status = model.status;
    article.dataset.lastSeq = model.lastSeq ?? "";
    setText(refs.title, model.workflowName || "Execution");
    refs.badge.className = `badge status-${model.status}`;
    setText(refs.badge, model.lastSeq === null ? "loading" : model.status);
    refs.created.setAttribute("datetime", model.createdAt ?? "");
    setText(refs.created, time(model.createdAt));
    setText(refs.mode, `${model.mode} mode`);
    refs.retries.hidden = model.retries < 1;
    setText(refs.retries, ` · retried ${model.retries === 1 ? "once" : `${model.retries} times`}`);
    const live = liveSteps(model);
    refs.running.hidden = live.length < 2;
    setText(refs.running, live.length < 2 ? "" : `Running at once: ${names(live.map((s) => s.name))}`);
    overallBar.set(value, model.status);
    setText(refs.percentage, percent(value));
    setText(refs.stepsDone, `${completedSteps(model)} of ${model.steps.length} steps done`);
    setText(refs.eta, overallEta(now));
    renderConnection();
    actions.update(model);
    const grouped = stages(model);
    renderSteps(now, grouped);
    sideBySide ||= live.length > 1 || ranSideBySide(model, now);
    lanes.update(model, now, sideBySide || grouped !== null);
    renderHistory(now);
    const trouble = problem();
    refs.problem.hidden = !trouble;
    setText(refs.problem, trouble ?? "");
    const showResult = model.status === "completed";
    refs.result.hidden = !showResult;
    if (showResult && refs.result.dataset.seq !== String(model.lastSeq)) {
      refs.result.dataset.seq = String(model.lastSeq);
      fill(refs.result, h("h3", { id: "result-title", class: "card-title" }, "Result"), resultView(model));
    }
    document.title = `${percent(value)} · ${model.workflowName || "Execution"} — Discovery`;
    onChange?.(model);
  }

  async function refreshEstimate() {
    try {
      const status = await api.status(executionId);
      if (!closed) {
        estimate = { seconds: status.progress.estimated_remaining_seconds, at: Date.now() };
        scheduleRender();
      }
    } catch {
      // The estimate is a nicety: the live events go on without it.
    }
  }

  function estimateSoon() {
    clearTimeout(estimateTimer);
    estimateTimer = setTimeout(refreshEstimate, 300);
  }

  // Elapsed times, ETAs and the reconnect countdown move with the clock.
  const ticker = setInterval(() => {
    if (!TERMINAL.has(model.status) || phase.phase === "reconnecting") scheduleRender();
  }, 1000);

  async function start() {
    try {
      applyStepsListing(model, await api.steps(executionId));
      scheduleRender();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        phase = { phase: "not-found" };
        scheduleRender();
        return;
      }
      // The snapshot brings the history; steps not started yet appear as they start.
    }
    if (closed) return;
    socket = new ExecutionSocket(executionId, {
      onSnapshot(status, seq) {
        applySnapshot(model, status, seq);
        notice = null;
        estimate = { seconds: status.progress.estimated_remaining_seconds, at: Date.now() };
        timeline.snapshot(seq, status.status);
        scheduleRender();
      },
      onEvent(event) {
        applyEvent(model, event);
        notice = null;
        timeline.add(event);
        if (event.event === "step_started" || event.event === "step_finished") estimateSoon();
        scheduleRender();
      },
      onState(state) {
        if (state.phase === "connecting" && state.resumed && !state.reopened) {
          timeline.resuming(socket.lastSeq);
        }
        phase = state;
        scheduleRender();
      },
      onServerError(error) {
        notice = `The gateway says: ${error.message ?? error.code}`;
        scheduleRender();
      },
    });
    socket.start();
  }

  start();

  return {
    close() {
      closed = true;
      clearInterval(ticker);
      clearTimeout(estimateTimer);
      if (frame !== null) cancelAnimationFrame(frame);
      socket?.stop();
    },
  };
}
