// The gateway's REST API as the dashboard uses it, every call with the tab's token. A refusal
// comes back as ApiError with the legacy error body's code and message, which the page shows
// as they are; a 401 also signs the tab out.

import { signOut, token } from "./auth.js";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? {};
  }
}

function authorized(extra) {
  const headers = { ...extra };
  const current = token();
  if (current !== null) headers.Authorization = `Bearer ${current}`;
  return headers;
}

async function send(path, options) {
  try {
    return await fetch(path, { cache: "no-store", ...options });
  } catch (error) {
    throw new ApiError(0, "NETWORK", `the gateway did not answer (${error.message})`);
  }
}

function parsed(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** A refusal as ApiError, from the legacy error body; a 401 also signs the tab out. */
function refusal(response, value) {
  const error = value?.error ?? {};
  if (response.status === 401) signOut(error.message ?? "the gateway asked to sign in again");
  return new ApiError(
    response.status,
    error.code ?? `HTTP_${response.status}`,
    error.message ?? `${response.status} ${response.statusText}`,
    error.details,
  );
}

async function request(method, path, body, extra = {}) {
  const headers = authorized(extra);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await send(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const value = parsed(await response.text());
  if (!response.ok) throw refusal(response, value);
  return value;
}

// A stream cut off mid-way (the gateway drops a reader that falls behind) is asked again
// from the last seq read, this many times in a row at most.
const STREAM_RESUMES = 5;

/**
 * The execution's events after `afterSeq` up to `untilSeq` (both seqs), oldest first, each
 * once: read from the Server-Sent Events route with the tab's token in a header, resumed
 * after the last one read if the stream breaks, and let go of once `untilSeq` has come (or
 * the stream ended, after the terminal event).
 */
async function loggedEvents(executionId, afterSeq, untilSeq) {
  const events = [];
  let resumes = 0;
  for (;;) {
    const from = events.at(-1)?.seq ?? afterSeq;
    if (from >= untilSeq) return events;
    try {
      await readEventStream(executionId, from, untilSeq, (event) => {
        events.push(event);
        resumes = 0;
      });
      return events;
    } catch (error) {
      if (error.code !== "STREAM_BROKEN" || ++resumes > STREAM_RESUMES) throw error;
    }
  }
}

/** One request of loggedEvents: each event after `afterSeq` to `onEvent`, up to `untilSeq`. */
async function readEventStream(executionId, afterSeq, untilSeq, onEvent) {
  const controller = new AbortController();
  const response = await send(`/executions/${id(executionId)}/events?after_seq=${afterSeq}`, {
    headers: authorized({ Accept: "text/event-stream" }),
    signal: controller.signal,
  });
  if (!response.ok) throw refusal(response, parsed(await response.text()));
  if (response.status === 204 || response.body === null) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        throw new ApiError(0, "STREAM_BROKEN", `the event stream broke off (${error.message})`);
      }
      if (chunk.done) return;
      buffer += chunk.value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        const message = parsed(data);
        if (message === null) continue; // the retry line, a keep-alive comment
        if (message.event === "error") {
          throw new ApiError(0, message.error?.code ?? "STREAM_ERROR", message.error?.message ?? "the event stream failed");
        }
        if (typeof message.seq !== "number" || message.seq <= afterSeq) continue;
        if (message.seq > untilSeq) return;
        if (message.seq !== afterSeq + 1) {
          throw new ApiError(0, "STREAM_BROKEN", `the event stream skipped from #${afterSeq} to #${message.seq}`);
        }
        afterSeq = message.seq;
        onEvent(message);
        if (message.seq === untilSeq) return;
      }
    }
  } finally {
    controller.abort(); // what is left of a live stream: not wanted
  }
}

const id = (value) => encodeURIComponent(value);

export const api = {
  /**
   * The newest executions first, narrowed by `filters` ({statuses: [...], workflowId, name}),
   * `limit` of them; `pageToken` (a previous answer's next_page_token) continues after it.
   */
  recentExecutions(limit, filters = {}, pageToken = null) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (filters.statuses?.length) query.set("status", filters.statuses.join(","));
    if (filters.workflowId) query.set("workflow_id", filters.workflowId);
    if (filters.name) query.set("name", filters.name);
    if (pageToken) query.set("page_token", pageToken);
    return request("GET", `/executions?${query}`);
  },
  loggedEvents,
  status: (executionId) => request("GET", `/executions/${id(executionId)}/status`),
  steps: (executionId) => request("GET", `/executions/${id(executionId)}/steps`),
  /** The step queue: what waits for a runner, by handler, and the runners polling. */
  queue: () => request("GET", "/queue"),
  /** Runs the next step of a waiting execution; `data` is merged into its context first. */
  advance: (executionId, data) =>
    request("POST", `/executions/${id(executionId)}/advance`, data === undefined ? {} : { data }),
  /** Cancels a pending, running or waiting execution; the reason is logged with it. */
  cancel: (executionId, reason) =>
    request("POST", `/executions/${id(executionId)}/cancel`, reason ? { reason } : {}),
  /**
   * Takes a failed or cancelled execution back to running, from `fromStep` (empty: the step
   * that failed); the same `requestId` again retries it once.
   */
  retry: (executionId, fromStep, requestId) =>
    request("POST", `/executions/${id(executionId)}/retry`, {
      ...(fromStep ? { from_step: fromStep } : {}),
      request_id: requestId,
    }),
  /** A short-lived token that may watch this execution only: what the WebSocket URL carries. */
  watchToken: (executionId) => request("POST", `/executions/${id(executionId)}/watch-token`),

  /** Every workflow definition, following the pages. */
  async workflows() {
    const all = [];
    let token = null;
    do {
      const query = token ? `?page_token=${id(token)}` : "";
      const page = await request("GET", `/workflows${query}`);
      all.push(...page.workflows);
      token = page.next_page_token;
    } while (token);
    return all;
  },

  /** Starts an execution; the idempotency key makes a repeated click start it once. */
  executeAsync: (workflowId, document, idempotencyKey) =>
    request("POST", `/workflows/${id(workflowId)}/execute-async`, document, {
      "Idempotency-Key": idempotencyKey,
    }),
};
