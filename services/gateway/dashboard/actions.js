// What the execution view lets a user do to the run: advance it where it waits for that
// (POST /executions/{id}/advance, optionally with data merged into its context) and cancel it
// while it has not ended (POST /executions/{id}/cancel, optionally with a reason).
//
// Shown only to a token whose role may (client, admin: auth.js reads the role from the token
// for this and nothing else); a watch token gets a line saying it only watches. The gateway
// decides in the end: a refusal (403, 409 when the run moved on meanwhile…) is shown as it
// came, until the user acts again.

import { mayDrive } from "./auth.js";
import { api } from "./api.js";
import { h, setText } from "./dom.js";

const CANCELLABLE = new Set(["pending", "running", "waiting"]);

function refusal(verb, error) {
  const how = error.status ? ` (HTTP ${error.status}, ${error.code})` : "";
  return `Not ${verb}: ${error.message}${how}`;
}

export function createActions(executionId, { onSettled }) {
  const drives = mayDrive();
  let model = null;
  // The action on its way: the buttons stay off until it is answered and the page has the
  // event it caused (the answer's status document names its `last_seq`), so one step cannot
  // be asked for twice.
  let pending = null;

  const status = h("p", { class: "action-status", role: "alert", dataset: { kind: "error" }, hidden: true });
  const readOnly = h(
    "p",
    { class: "hint read-only", hidden: drives },
    "Watching only: this token may follow the execution, not cancel or advance it.",
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
  const controls = h("div", { class: "actions", hidden: true }, advance, cancel, dataBox, cancelForm);

  function say(text) {
    status.hidden = !text;
    setText(status, text ?? "");
  }

  async function act(verb, call) {
    if (pending !== null || model === null) return;
    say(null);
    pending = { answered: false, from: model.lastSeq, until: null };
    update();
    try {
      const answer = await call();
      pending.answered = true;
      pending.until = typeof answer?.last_seq === "number" ? answer.last_seq : null;
      return true;
    } catch (error) {
      pending = null;
      say(refusal(verb, error));
      return false;
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
    if (await act("advanced", () => api.advance(executionId, value))) {
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
    if (await act("cancelled", () => api.cancel(executionId, reason.value.trim()))) {
      cancelForm.hidden = true;
    }
  });

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
    controls.hidden = !waiting && !cancellable;
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
    for (const button of [advance, cancel, confirm]) button.disabled = busy;
    controls.setAttribute("aria-busy", String(busy));
  }

  return { elements: [controls, status, readOnly], update };
}
