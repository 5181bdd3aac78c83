// The dashboard's entry point: the sign-in, the hash router (#/executions/{id}) and the
// parts of the page, the upload form, the step queue, the recent executions and the
// execution view. A watch token (role watcher: one execution, read only) gets that
// execution's view alone: it may not list, start or queue anything.

import { adoptTokenFromHash, claims, onSignOut, signIn, token, watchedExecution } from "./auth.js";
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

/** Who the token says the tab is, in the corner: "admin · tenant default". */
function showIdentity() {
  const payload = claims();
  const whoami = byId("whoami");
  if (payload === null || typeof payload.role !== "string") return;
  setText(whoami, `${payload.role} · tenant ${payload.tenant ?? "?"}`);
  whoami.title = payload.sub ? `signed in as ${payload.sub}` : "";
  whoami.hidden = false;
}

/** A watch token's page: its one execution, nothing to list or start. */
function startWatching(executionId) {
  const path = `#/executions/${encodeURIComponent(executionId)}`;
  byId("upload-card").hidden = true;
  byId("queue-card").hidden = true;
  byId("recent-filters").hidden = true;
  setText(byId("recent-note"), "");
  fill(
    byId("recent-list"),
    h("li", { class: "hint" }, "This token watches one execution: ", h("a", { href: path }, h("code", {}, executionId)), "."),
  );
  if (location.hash !== path) history.replaceState(null, "", `${location.pathname}${location.search}${path}`);
  return {
    refresh() {},
    select() {},
    live() {},
    placeholder: "This token follows one execution: open it from the list.",
  };
}

function start() {
  showIdentity();
  const watching = watchedExecution();
  if (watching !== null) {
    router(startWatching(watching));
    return;
  }
  const recent = setupRecent({
    list: byId("recent-list"),
    empty: byId("recent-empty"),
    note: byId("recent-note"),
    more: byId("recent-more"),
    form: byId("recent-filters"),
    statusBox: byId("filter-statuses"),
    workflowSelect: byId("filter-workflow"),
    nameInput: byId("filter-name"),
    clear: byId("filter-clear"),
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

  router(recent);
}

/** Opens the execution the fragment names (#/executions/{id}), and keeps the list in step. */
function router(recent) {
  let current = null;

  function placeholder() {
    return h(
      "div",
      { class: "card placeholder" },
      h("h2", {}, "No execution selected"),
      h("p", {}, recent.placeholder ?? "Upload a PDF to process it, or pick one of the recent executions to follow it live."),
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
