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

async function request(method, path, body, extra = {}) {
  const headers = { ...extra };
  const current = token();
  if (current !== null) headers.Authorization = `Bearer ${current}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "NETWORK", `the gateway did not answer (${error.message})`);
  }
  const text = await response.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = null;
  }
  if (!response.ok) {
    const error = value?.error ?? {};
    if (response.status === 401) signOut(error.message ?? "the gateway asked to sign in again");
    throw new ApiError(
      response.status,
      error.code ?? `HTTP_${response.status}`,
      error.message ?? `${response.status} ${response.statusText}`,
      error.details,
    );
  }
  return value;
}

const id = (value) => encodeURIComponent(value);

export const api = {
  recentExecutions: (limit) => request("GET", `/executions?limit=${limit}`),
  status: (executionId) => request("GET", `/executions/${id(executionId)}/status`),
  steps: (executionId) => request("GET", `/executions/${id(executionId)}/steps`),
  /** The step queue: what waits for a runner, by handler, and the runners polling. */
  queue: () => request("GET", "/queue"),
  advance: (executionId) => request("POST", `/executions/${id(executionId)}/advance`, {}),
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
