// The gateway's REST API as the dashboard uses it. A refusal comes back as ApiError with the
// legacy error body's code and message, which the page shows as they are.

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? {};
  }
}

async function request(method, path, body, headers = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
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
  advance: (executionId) => request("POST", `/executions/${id(executionId)}/advance`, {}),

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
