// What the execution view lets a user do to the run: advance it where it waits for that
// (POST /executions/{id}/advance, optionally with data merged into its context), cancel it
// while it has not ended (POST /executions/{id}/cancel, optionally with a reason), and retry
// it once it failed or was cancelled (POST /executions/{id}/retry, from the step that failed
// or one the user picks): the run goes on in the same execution, and the page follows it.
//
// Shown only to a token whose role may (client, admin: auth.js reads the role from the token
// for this and nothing else); a watch token gets a line saying it only watches. The gateway
// decides in the end: a refusal (403, 409 when the run moved on meanwhile…) is shown as it
// came, until the user acts again.

import { mayDrive } from "./auth.js";
import { api } from "./api.js";
import { fill, h, setText } from "./dom.js";
import { uuid4 } from "./uuid.js";

const CANCELLABLE = new Set(["pending", "running", "waiting"]);
const RETRYABLE = new Set(["failed", "cancelled"]);

function refusal(verb, error) {
  const how = error.status ? ` (HTTP ${error.status}, ${error.code})` : "";
  return `Not ${verb}: ${error.message}${how}`;
}

/**
 * The buttons and their answers. `onSettled()` after each action; `onRetried()` once a retry
 * was made, or refused because the run had moved on: the page's feed stopped at the end, and
 * what follows it is to be read.
 */
export function createActions(executionId, { onSettled, onRetried }) {
  const drives = mayDrive();
  let model = null;
  // The action on its way: the buttons stay off until it is answered and the page has the
  // event it caused (the answer's status document names its `last_seq`), so one step cannot
  // be asked for twice.
  let pending = null;
  // One request id per end the run reached ({seq, id}): every click on Retry for that end
  // sends the same one, so however often it is sent (a double click, a click again after
  // an answer lost on the way) the run is retried once. A later end gets a new one.
  let retryKey = null;

  const status = h("p", { class: "action-status", role: "alert", dataset: { kind: "error" }, hidden: true });
  const readOnly = h(
    "p",
    { class: "hint read-only", hidden: drives },
    "Watching only: this token may follow the execution, not cancel, advance or retry it.",
  );

  const advance = h("button", { type: "button", class: "button" }, "Run the next step");
  const data = h("textarea", {
    id: `advance-data-${executionId}`,
    class: "advance-data",
    rows: 3,
    spellcheck: "false",
    placeholder: '{"approved": true}',
  });
  const dataBox = h(
    "details",
    { class: "advance-more" },
    h("summary", {}, "Data for the next step"),
    h("label", { for: data.id }, "A JSON object, merged into the execution's context before the step runs"),
    data,
  );

  const cancel = h("button", { type: "button", class: "button danger" }, "Cancel execution…");
  const reason = h("input", { id: `cancel-reason-${executionId}`, type: "text", maxlength: 1000, autocomplete: "off" });
  const confirm = h("button", { type: "submit", class: "button danger" }, "Confirm cancellation");
  const keep = h("button", { type: "button", class: "link-button" }, "Keep it");
  const cancelForm = h(
    "form",
    { class: "cancel-form", hidden: true, "aria-label": "Cancel the execution" },
    h("label", { for: reason.id }, "Reason (optional)"),
    reason,
    h("div", { class: "cancel-buttons" }, confirm, keep),
  );
  const retry = h("button", { type: "button", class: "button" }, "Retry execution");
  const fromStep = h("select", { id: `retry-from-${executionId}`, class: "retry-from" });
  const retryBox = h(
    "details",
    { class: "advance-more retry-more" },
    h("summary", {}, "Retry from another step"),
    h("label", { for: fromStep.id }, "Step to run again, with every step that waits for it"),
    fromStep,
  );

  const controls = h("div", { class: "actions", hidden: true }, advance, retry, cancel, dataBox, retryBox, cancelForm);

  function say(text) {
    status.hidden = !text;
    setText(status, text ?? "");
  }

  /** Sends one action at a time; {ok: true}, or {ok: false, error} when it was refused. */
  async function act(verb, call) {
    if (pending !== null || model === null) return { ok: false, error: null };
    say(null);
    pending = { answered: false, from: model.lastSeq, until: null };
    update();
    try {
      const answer = await call();
      pending.answered = true;
      pending.until = typeof answer?.last_seq === "number" ? answer.last_seq : null;
      return { ok: true };
    } catch (error) {
      pending = null;
      say(refusal(verb, error));
      return { ok: false, error };
    } finally {
      update();
      onSettled();
    }
  }

  advance.addEventListener("click", async () => {
    const text = data.value.trim();
    let value;
    if (text) {
      try {
        value = JSON.parse(text);
      } catch {
        value = null;
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        say('Not advanced: the data must be a JSON object, such as {"approved": true}.');
        dataBox.open = true;
        data.focus();
        return;
      }
    }
    if ((await act("advanced", () => api.advance(executionId, value))).ok) {
      data.value = "";
      dataBox.open = false;
    }
  });

  cancel.addEventListener("click", () => {
    cancelForm.hidden = false;
    cancel.hidden = true;
    reason.focus();
  });
  keep.addEventListener("click", () => {
    cancelForm.hidden = true;
    cancel.hidden = false;
    cancel.focus();
  });
  cancelForm.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    if ((await act("cancelled", () => api.cancel(executionId, reason.value.trim()))).ok) {
      cancelForm.hidden = true;
    }
  });

  function retryRequestId() {
    if (retryKey?.seq !== model.lastSeq) retryKey = { seq: model.lastSeq, id: uuid4() };
    return retryKey.id;
  }

  retry.addEventListener("click", async () => {
    if (model === null) return;
    const from = fromStep.value;
    const requestId = retryRequestId();
    const { ok, error } = await act("retried", () => api.retry(executionId, from, requestId));
    if (ok) {
      fromStep.value = "";
      retryBox.open = false;
    }
    // 409: no longer failed or cancelled, as the page shows it: retried or moved on elsewhere.
    if (ok || error?.status === 409) onRetried?.();
  });
  fromStep.addEventListener("change", () => update());

  /** The steps to retry from: by default the one that failed, else each step by name. */
  function retryChoices() {
    const failedStep = model.status === "failed" ? model.error?.step_name : null;
    const first = failedStep ? `The step that failed (${failedStep})` : "The first step not done";
    const key = [first, ...model.steps.map((s) => s.name)].join("\u0000");
    if (fromStep.dataset.key === key) return;
    fromStep.dataset.key = key;
    const chosen = fromStep.value;
    fill(
      fromStep,
      h("option", { value: "" }, first),
      model.steps.map((s) => h("option", { value: s.name }, s.name)),
    );
    fromStep.value = model.steps.some((s) => s.name === chosen) ? chosen : "";
  }

  /** Shows what the execution's state allows now. */
  function update(next = model) {
    model = next;
    if (model === null) return;
    if (pending?.answered && (pending.until === null ? model.lastSeq !== pending.from : model.lastSeq >= pending.until)) {
      pending = null;
    }
    const loaded = model.lastSeq !== null;
    const waiting = drives && loaded && model.status === "waiting";
    const cancellable = drives && loaded && CANCELLABLE.has(model.status);
    const retryable = drives && loaded && RETRYABLE.has(model.status);
    controls.hidden = !waiting && !cancellable && !retryable;
    retry.hidden = !retryable;
    retryBox.hidden = !retryable;
    if (retryable) {
      retryChoices();
      setText(retry, fromStep.value ? `Retry from ${fromStep.value}` : "Retry execution");
    }
    advance.hidden = !waiting;
    dataBox.hidden = !waiting;
    setText(advance, `Run the next step${model.waitingFor ? ` (${model.waitingFor})` : ""}`);
    if (!cancellable) {
      cancelForm.hidden = true;
      cancel.hidden = true;
    } else if (cancelForm.hidden) {
      cancel.hidden = false;
    }
    const busy = pending !== null;
    for (const control of [advance, cancel, confirm, retry, fromStep]) control.disabled = busy;
    controls.setAttribute("aria-busy", String(busy));
  }

  return { elements: [controls, status, readOnly], update };
}
