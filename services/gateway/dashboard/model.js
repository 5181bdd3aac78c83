// One execution as the dashboard knows it: the status document folded with the live events.
//
// No DOM here. The model is built from GET /executions/{id}/steps (every step of the
// workflow, also those not started yet), replaced by the WebSocket's snapshot (the status
// document at seq N), then moved forward one event at a time, each event once, in seq order
// (socket.js guarantees that).
//
// Steps may run side by side: a workflow whose steps name the steps they wait for (`after`,
// in the steps listing) is a graph, drawn in stages. A retry
// (`workflow_retried`) takes an ended execution back to running: the attempts of the steps it
// runs again stay in their history, but no longer count as the step's current attempt.

// Every status an execution may have (the REST API's `status` values), in the order of a run.
export const STATUSES = ["pending", "running", "waiting", "completed", "failed", "cancelled"];
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const TERMINAL_EVENTS = new Set(["workflow_completed", "workflow_failed", "workflow_cancelled"]);

export function isTerminalEvent(name) {
  return TERMINAL_EVENTS.has(name);
}

export function createModel(executionId) {
  return {
    executionId,
    workflowName: "",
    workflowId: "",
    status: "pending",
    mode: "automatic",
    createdAt: null,
    updatedAt: null,
    // [{name, order, handler, listedState, attempts: [history entry…], since}], in workflow
    // order; attempts before `since` were superseded by a retry.
    steps: [],
    // Each step's `after` by name, from the steps listing; null until it is read.
    after: null,
    // Times the execution was retried (the status document's `retries`).
    retries: 0,
    // The status document's context.dynamic_properties: outputs of the finished steps.
    context: {},
    error: null,
    cancelReason: null,
    waitingFor: null,
    lastSeq: null,
  };
}

function stepNamed(model, name, order) {
  let step = model.steps.find((s) => s.name === name);
  if (step === undefined) {
    // A step the listing did not give (it failed to load): learnt from the history.
    step = { name, order: order ?? model.steps.length + 1, handler: "", listedState: "pending", attempts: [], since: 0 };
    model.steps.push(step);
    model.steps.sort((a, b) => a.order - b.order);
  }
  return step;
}

/** GET /executions/{id}/steps: the workflow's steps and their attempts so far. */
export function applyStepsListing(model, listing) {
  model.steps = listing.steps
    .map((s) => ({
      name: s.name,
      order: s.order,
      handler: s.handler,
      listedState: s.state,
      attempts: s.attempts.map((a) => ({ ...a })),
      since: 0,
    }))
    .sort((a, b) => a.order - b.order);
  model.after = new Map(listing.steps.map((s) => [s.name, s.after ?? []]));
}

/**
 * The steps by stage, for a workflow whose steps name their dependencies: a step's stage is
 * one past the deepest of the steps it waits for, so the steps of one stage may run side by
 * side. Each stage's steps in workflow order. Null for a straight line (no step names any
 * dependency: each waits for the one before it) and while the definition is not known.
 */
export function stages(model) {
  const after = model.after;
  if (after === null || ![...after.values()].some((names) => names.length > 0)) return null;
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name) || !after.has(name)) return 0; // checked acyclic at creation
    visiting.add(name);
    const value = Math.max(-1, ...after.get(name).map(depthOf)) + 1;
    visiting.delete(name);
    depth.set(name, value);
    return value;
  };
  const grouped = [];
  for (const step of model.steps) {
    const level = depthOf(step.name);
    (grouped[level] ??= []).push(step);
  }
  return grouped.filter((group) => group !== undefined);
}

/** The snapshot's status document: everything up to its seq. */
export function applySnapshot(model, status, seq) {
  model.workflowName = status.workflow_name;
  model.workflowId = status.workflow_id;
  model.retries = status.retries ?? 0;
  model.status = status.status;
  model.mode = status.mode;
  model.createdAt = status.created_at;
  model.updatedAt = status.updated_at;
  model.context = status.context?.dynamic_properties ?? {};
  model.error = status.error ?? null;
  model.waitingFor = status.status === "waiting" ? status.current_step?.name ?? null : null;
  for (const step of model.steps) {
    step.attempts = [];
    step.since = 0; // the history does not say which attempts a retry superseded
  }
  for (const entry of status.steps_history) {
    stepNamed(model, entry.step_name, entry.order).attempts.push({ ...entry });
  }
  model.lastSeq = seq;
}

function attemptOf(step, number) {
  return step.attempts.find((a) => a.attempt === number) ?? step.attempts.at(-1);
}

/** One live event, after model.lastSeq. Returns false for an event kind it does not know. */
export function applyEvent(model, event) {
  model.lastSeq = event.seq;
  model.updatedAt = event.timestamp;
  switch (event.event) {
    case "workflow_started":
      model.status = "running";
      return true;
    case "workflow_waiting":
      model.status = "waiting";
      model.waitingFor = event.step ?? null;
      return true;
    case "workflow_advanced":
      model.status = "running";
      model.waitingFor = null;
      return true;
    case "step_queued": {
      // The attempt waits in the step queue until a runner takes it: nothing runs it yet.
      model.status = "running";
      model.waitingFor = null;
      const step = stepNamed(model, event.step, event.order);
      step.attempts = step.attempts.filter((a) => a.attempt !== event.attempt);
      step.attempts.push({
        step_name: event.step,
        status: "queued",
        attempt: event.attempt,
        queued_at: event.timestamp,
        started_at: null,
        finished_at: null,
        duration_seconds: null,
        output_payload: null,
        order: event.order,
        error: null,
        last_progress: null,
        runner_id: null,
      });
      return true;
    }
    case "step_started": {
      model.status = "running";
      model.waitingFor = null;
      const step = stepNamed(model, event.step, event.order);
      const queued = step.attempts.find((a) => a.attempt === event.attempt);
      step.attempts = step.attempts.filter((a) => a.attempt !== event.attempt);
      step.attempts.push({
        step_name: event.step,
        status: "running",
        attempt: event.attempt,
        queued_at: queued?.queued_at ?? null,
        started_at: event.timestamp,
        finished_at: null,
        duration_seconds: null,
        output_payload: null,
        order: event.order,
        error: null,
        last_progress: null,
        runner_id: event.runner_id ?? null,
      });
      return true;
    }
    case "step_progress": {
      const attempt = attemptOf(stepNamed(model, event.step_name), event.attempt);
      if (attempt !== undefined) {
        attempt.last_progress = event.progress;
      }
      return true;
    }
    case "step_finished": {
      const attempt = attemptOf(stepNamed(model, event.step, event.order), event.attempt);
      if (attempt !== undefined) {
        attempt.status = event.status;
        attempt.finished_at = event.timestamp;
        attempt.duration_seconds = event.duration_seconds ?? null;
        attempt.output_payload = event.output ?? null;
        attempt.error = event.error ?? null;
      }
      if (event.status === "success" && event.output && typeof event.output === "object") {
        model.context = { ...model.context, ...event.output };
      }
      return true;
    }
    case "workflow_completed":
      model.status = "completed";
      model.context = event.dynamic_properties ?? model.context;
      return true;
    case "workflow_failed":
      model.status = "failed";
      model.error = event.error ?? null;
      return true;
    case "workflow_cancelled":
      model.status = "cancelled";
      model.cancelReason = event.reason ?? null;
      return true;
    case "workflow_retried":
      // Running again: the steps it names start over, their attempts so far kept as history.
      model.status = "running";
      model.error = null;
      model.cancelReason = null;
      model.waitingFor = null;
      model.retries += 1;
      for (const name of event.steps ?? []) {
        const step = stepNamed(model, name);
        step.since = step.attempts.length;
      }
      return true;
    default:
      return false;
  }
}

/** The step's current attempt: its latest, unless a retry since runs the step again. */
export function currentAttempt(step) {
  return step.attempts.length > (step.since ?? 0) ? step.attempts.at(-1) : undefined;
}

/** What the step is doing now: pending, waiting, queued, running, retrying, success, failed… */
export function stepState(model, step) {
  const last = currentAttempt(step);
  if (last === undefined) {
    if (model.waitingFor === step.name) return "waiting";
    if (model.lastSeq === null) return step.listedState;
    return TERMINAL.has(model.status) && model.status !== "completed" ? "skipped" : "pending";
  }
  if ((last.status === "failed" || last.status === "timed_out") && !TERMINAL.has(model.status)) {
    return "retrying";
  }
  return last.status;
}

/** 0 to 100: a finished step is full, a running one shows what it last reported. */
export function stepPercentage(step) {
  const last = currentAttempt(step);
  if (last === undefined) return 0;
  if (last.status === "success") return 100;
  return clampPercentage(last.last_progress?.percentage ?? 0);
}

export function overallPercentage(model) {
  if (model.status === "completed") return 100;
  if (model.steps.length === 0) return 0;
  const sum = model.steps.reduce((total, step) => total + stepPercentage(step), 0);
  return sum / model.steps.length;
}

export function completedSteps(model) {
  return model.steps.filter((s) => currentAttempt(s)?.status === "success").length;
}

export function runningStep(model) {
  return model.steps.find((s) => currentAttempt(s)?.status === "running") ?? null;
}

/** Every step queued or running now, in workflow order: more than one side by side. */
export function liveSteps(model) {
  return model.steps.filter((s) => ["running", "queued"].includes(currentAttempt(s)?.status));
}

/** The step the execution is at: running, or queued for a runner (the first of them). */
export function activeStep(model) {
  return liveSteps(model)[0] ?? null;
}

/**
 * Seconds the attempt waited in the step queue: until `now` while it is queued, until its
 * start once a runner took it; null when that is not known.
 */
export function queueWait(attempt, now = Date.now()) {
  if (!attempt?.queued_at) return null;
  const from = new Date(attempt.queued_at).getTime();
  let to = null;
  if (attempt.status === "queued") to = now;
  else if (attempt.started_at) to = new Date(attempt.started_at).getTime();
  if (to === null || Number.isNaN(from) || Number.isNaN(to)) return null;
  return Math.max(0, (to - from) / 1000);
}

/** Every attempt of every step, oldest first: the history table. */
export function history(model) {
  return model.steps
    .flatMap((s) => s.attempts)
    .sort((a, b) => since(a).localeCompare(since(b)) || a.order - b.order);
}

/** When the attempt began: it entered the queue (or, in older histories, it started). */
function since(attempt) {
  return attempt.queued_at ?? attempt.started_at ?? "";
}

function clampPercentage(value) {
  const number = Number(value);
  if (!Number.isFinite(number)) return 0;
  return Math.min(100, Math.max(0, number));
}
