// A Discovery step runner in Node.js 20, with no dependencies: it serves the webhook contract
// (README.md in this folder) and runs one step, `node_progress5`, which reports progress five
// times and then completes, stopping early when a progress reply says the run was cancelled.
//
//   PORT=8000 DISCOVERY_URL=http://localhost:8080 node server.js
//
// PORT           where the engine pushes attempts (the engine's PIONEER_URL names it)
// HOST           the address it listens on (default 127.0.0.1)
// DISCOVERY_URL  the gateway, where steps report (the seed's variable); unset: each attempt's
//                report_urls
// MAX_CONCURRENT how many attempts it runs at once (default 4)
// STEP_DELAY_MS  the pause before each progress report (default 200)
//
// Logs one JSON object a line on stdout; never an attempt token.

"use strict";

const http = require("node:http");

const PORT = integer("PORT", 8000);
const HOST = (process.env.HOST || "").trim() || "127.0.0.1";
const DISCOVERY_URL = (process.env.DISCOVERY_URL || "").trim().replace(/\/+$/, "");
const MAX_CONCURRENT = integer("MAX_CONCURRENT", 4);
const STEP_DELAY_MS = integer("STEP_DELAY_MS", 200);
const MAX_BODY_BYTES = 1024 * 1024;
const CALL_TIMEOUT_MS = 10_000;
// Tokens of the attempts accepted: the engine delivers at least once, and a repeated POST of
// an accepted attempt is answered 202 again without running it twice.
const MAX_REMEMBERED = 10_000;

if (DISCOVERY_URL && !/^https?:\/\/[^/]+/.test(DISCOVERY_URL)) {
  fail(`DISCOVERY_URL=${JSON.stringify(DISCOVERY_URL)} is not an http:// or https:// URL`);
}

const handlers = { node_progress5: progressFive };
const accepted = new Map(); // attempt_token -> true while running, false once ended
let running = 0;

function integer(name, fallback) {
  const raw = (process.env[name] || "").trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) fail(`${name}=${JSON.stringify(raw)} is not an integer`);
  return value;
}

function fail(message) {
  process.stderr.write(`runner-node: ${message}\n`);
  process.exit(2);
}

function log(event, fields = {}) {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), event, ...fields }) + "\n");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- reporting to Discovery --------------------------------------------------------------

function reportUrl(attempt, kind) {
  if (DISCOVERY_URL) {
    const id = encodeURIComponent(attempt.execution_id);
    const step = encodeURIComponent(attempt.step_name);
    return `${DISCOVERY_URL}/executions/${id}/steps/${step}/${kind}`;
  }
  return attempt.report_urls[kind];
}

class Stale extends Error {}

// POSTs a report with the attempt token (no other credential: the token is the proof). Sent
// again on a network error or a 5xx/429, a few times; a 409 means the attempt is over.
async function report(attempt, kind, body) {
  let delay = 200;
  for (let tries = 1; ; tries++) {
    let response;
    try {
      response = await fetch(reportUrl(attempt, kind), {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Attempt-Token": attempt.attempt_token },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    } catch (error) {
      if (tries >= 5) throw error;
      await sleep(delay);
      delay *= 2;
      continue;
    }
    const text = await response.text();
    if (response.ok) return text ? JSON.parse(text) : {};
    if (response.status === 409) throw new Stale(`HTTP 409: ${text.slice(0, 200)}`);
    if ((response.status >= 500 || response.status === 429) && tries < 5) {
      await sleep(delay);
      delay *= 2;
      continue;
    }
    throw new Error(`${kind} answered HTTP ${response.status}: ${text.slice(0, 200)}`);
  }
}

// --- the step ------------------------------------------------------------------------------

// Reports progress five times, then completes; a progress reply with cancel_requested stops
// it there (no completion: the run is cancelled, and nothing more is reported).
async function progressFive(attempt, context) {
  // The run's input may set its own pause (`delay_ms`, at most a minute).
  const asked = attempt.input && attempt.input.delay_ms;
  const delay = Number.isInteger(asked) && asked >= 0 ? Math.min(asked, 60_000) : STEP_DELAY_MS;
  for (let i = 1; i <= 5; i++) {
    await sleep(delay);
    const reply = await report(attempt, "progress", {
      percentage: i * 20 - 10,
      message: `part ${i} of 5`,
      current_task: `part ${i}`,
      custom_data: { part: i, runner: "node" },
    });
    log("progress", { ...context, part: i });
    if (reply.cancel_requested) {
      log("cancel_requested", context);
      return null;
    }
  }
  return { success: true, parts: 5, runner: "node", input_keys: Object.keys(attempt.input || {}) };
}

async function run(attempt) {
  const context = {
    execution_id: attempt.execution_id,
    step_name: attempt.step_name,
    attempt: attempt.attempt,
  };
  running += 1;
  try {
    const result = await handlers[attempt.handler](attempt, context);
    if (result !== null) {
      await report(attempt, "complete", result);
      log("completed", context);
    }
  } catch (error) {
    if (error instanceof Stale) {
      log("stale", { ...context, error: error.message });
    } else {
      log("failed", { ...context, error: String(error) });
      await report(attempt, "complete", {
        success: false,
        error: { type: error.name || "Error", message: String(error.message || error) },
      }).catch((e) => log("not_reported", { ...context, error: String(e) }));
    }
  } finally {
    running -= 1;
    accepted.set(attempt.attempt_token, false);
  }
}

// --- the webhook contract ------------------------------------------------------------------

function send(response, status, value, headers = {}) {
  const body = JSON.stringify(value);
  response.writeHead(status, { "Content-Type": "application/json", ...headers });
  response.end(body);
}

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    request.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error("body too large"), { status: 413 }));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

async function acceptAttempt(request, response) {
  let attempt;
  try {
    attempt = JSON.parse(await readBody(request));
  } catch (error) {
    return send(response, error.status || 400, { error: String(error.message || error) });
  }
  const token = attempt && attempt.attempt_token;
  if (typeof token !== "string" || !token || typeof attempt.execution_id !== "string") {
    return send(response, 400, { error: "attempt_token and execution_id are required" });
  }
  if (accepted.has(token)) {
    return send(response, 202, { accepted: true, repeated: true });
  }
  if (!Object.hasOwn(handlers, attempt.handler)) {
    // For good: the engine fails the attempt with this answer as its reason.
    return send(response, 422, { error: `no handler named ${JSON.stringify(attempt.handler)}` });
  }
  if (running >= MAX_CONCURRENT) {
    return send(response, 429, { error: "busy" }, { "Retry-After": "1" });
  }
  if (accepted.size >= MAX_REMEMBERED) {
    for (const [old, live] of accepted) {
      if (!live) accepted.delete(old);
      if (accepted.size < MAX_REMEMBERED / 2) break;
    }
  }
  accepted.set(token, true);
  log("accepted", {
    execution_id: attempt.execution_id,
    step_name: attempt.step_name,
    attempt: attempt.attempt,
    deadline: attempt.deadline,
  });
  send(response, 202, { accepted: true });
  run(attempt); // answered at once; the step runs on
}

const server = http.createServer((request, response) => {
  const path = new URL(request.url, "http://runner").pathname;
  if (request.method === "GET" && path === "/v1/handlers") {
    return send(response, 200, { handlers: Object.keys(handlers), max_concurrent: MAX_CONCURRENT });
  }
  if (request.method === "POST" && path === "/v1/attempts") {
    return acceptAttempt(request, response).catch((error) =>
      send(response, 500, { error: String(error) }),
    );
  }
  return send(response, 404, { error: `no route ${request.method} ${path}` });
});
server.requestTimeout = CALL_TIMEOUT_MS;
server.headersTimeout = CALL_TIMEOUT_MS;

server.listen(PORT, HOST, () => {
  log("listening", { port: server.address().port, discovery_url: DISCOVERY_URL || null });
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    log("stopping", { running });
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
