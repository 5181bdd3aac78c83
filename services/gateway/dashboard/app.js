// The dashboard's entry point: the sign-in, the hash router (#/executions/{id}) and the three
// parts of the page, the upload form, the recent executions and the execution view.

import { adoptTokenFromHash, onSignOut, signIn, token } from "./auth.js";
import { fill, h, setText } from "./dom.js";
import { openExecution } from "./execution.js";
import { activeStep, overallPercentage } from "./model.js";
import { setupQueue } from "./queue.js";
import { setupRecent } from "./recent.js";
import { setupUpload } from "./upload.js";

const byId = (id) => document.getElementById(id);
const detail = byId("detail");

function askForToken(reason) {
  byId("signin").hidden = false;
  setText(byId("signin-note"), `${reason} (\`make run\` writes one to .discovery/token.)`);
  byId("signin-token").focus();
}

byId("signin-form").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const value = byId("signin-token").value;
  if (!value.trim()) return;
  signIn(value);
  location.reload();
});
onSignOut((reason) => askForToken(`Signed out: ${reason}.`));

adoptTokenFromHash();
if (token() === null) {
  askForToken("Sign in with a token to see the executions.");
} else {
  start();
}

function start() {
  const recent = setupRecent({
    list: byId("recent-list"),
    empty: byId("recent-empty"),
    note: byId("recent-note"),
  });

  setupQueue({
    summary: byId("queue-summary"),
    table: byId("queue-depths"),
    rows: byId("queue-rows"),
    runners: byId("queue-runners"),
    note: byId("queue-note"),
  });

  setupUpload(
    {
      form: byId("upload-form"),
      input: byId("upload-file"),
      button: byId("upload-submit"),
      status: byId("upload-status"),
      workflowNote: byId("upload-workflow"),
    },
    {
      onStarted(executionId) {
        location.hash = `#/executions/${encodeURIComponent(executionId)}`;
        recent.refresh();
      },
    },
  );

  let current = null;

  function placeholder() {
    return h(
      "div",
      { class: "card placeholder" },
      h("h2", {}, "No execution selected"),
      h("p", {}, "Upload a PDF to process it, or pick one of the recent executions to follow it live."),
    );
  }

  function route() {
    const match = /^#\/executions\/([^/?#]+)$/.exec(location.hash);
    let executionId = null;
    if (match) {
      try {
        executionId = decodeURIComponent(match[1]);
      } catch {
        executionId = null; // a malformed escape in a hand-typed URL
      }
    }
    if (current !== null && current.executionId === executionId) return;
    current?.view.close();
    current = null;
    recent.select(executionId);
    if (executionId === null) {
      document.title = "Discovery — executions";
      fill(detail, placeholder());
      return;
    }
    const view = openExecution(detail, executionId, {
      onChange(model) {
        if (model.lastSeq === null) return; // not loaded yet: the list knows better
        recent.live({
          executionId,
          status: model.status,
          percentage: overallPercentage(model),
          current: activeStep(model)?.name ?? null,
        });
      },
    });
    current = { executionId, view };
    detail.focus({ preventScroll: true });
  }

  window.addEventListener("hashchange", route);
  route();
}
