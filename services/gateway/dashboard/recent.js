// The list of recent executions: GET /executions, newest first, refreshed every few seconds
// while the page is visible (and at once when asked, e.g. after an upload).
//
// Filters narrow it: statuses, one workflow (from GET /workflows) and part of the workflow's
// name, sent as the API's `status`, `workflow_id` and `name`. They live in the address's
// query (`/?status=failed,cancelled&workflow_id=…#/executions/…`), so a reload or a shared
// link shows the same list. "Show older executions" reads the next page with the last
// answer's page_token and the same filters; each refresh then reads all that is shown.

import { api } from "./api.js";
import { fill, h, progressBar, setText } from "./dom.js";
import { ago, percent, shortId } from "./format.js";
import { STATUSES, TERMINAL } from "./model.js";

const LIMIT = 20;
// The most one call may ask for (the API's bound): the list shows no more than this.
const MAX_SHOWN = 1000;
const REFRESH_MS = 3000;
const TYPING_MS = 300;

/** The filters the address holds: {statuses: [...], workflowId, name}. */
export function filtersFromUrl(search = location.search) {
  const query = new URLSearchParams(search);
  const asked = new Set(
    query
      .getAll("status")
      .flatMap((value) => value.split(","))
      .map((value) => value.trim().toLowerCase()),
  );
  return {
    statuses: STATUSES.filter((status) => asked.has(status)),
    workflowId: query.get("workflow_id") ?? "",
    name: query.get("name") ?? "",
  };
}

/** Writes the filters into the address's query, keeping its fragment (the open execution). */
function writeUrl(filters) {
  const query = new URLSearchParams(location.search);
  for (const key of ["status", "workflow_id", "name"]) query.delete(key);
  const parts = query.toString() ? [query.toString()] : [];
  // The statuses are plain words: kept readable, "failed,cancelled" rather than "%2C".
  if (filters.statuses.length > 0) parts.push(`status=${filters.statuses.join(",")}`);
  if (filters.workflowId) parts.push(`workflow_id=${encodeURIComponent(filters.workflowId)}`);
  if (filters.name) parts.push(`name=${encodeURIComponent(filters.name)}`);
  const search = parts.length > 0 ? `?${parts.join("&")}` : "";
  if (search !== location.search) history.replaceState(history.state, "", `${location.pathname}${search}${location.hash}`);
}

function filtering(filters) {
  return filters.statuses.length > 0 || filters.workflowId !== "" || filters.name !== "";
}

export function setupRecent({ list, empty, note, more, form, statusBox, workflowSelect, nameInput, clear }) {
  let selected = null;
  let timer = null;
  let executions = [];
  let filters = filtersFromUrl();
  let shown = LIMIT; // how many the list reads on each refresh
  let nextPageToken = null;
  let workflows = [];
  // What the open execution's view knows live, fresher than the last poll.
  let live = null;

  function summary(execution) {
    if (live !== null && live.executionId === execution.execution_id) return live;
    const { progress, current_step: current } = execution;
    // A summary's progress may leave out the steps already done (ListExecutions reads no
    // history); the step it is at says how many are behind it.
    const floor = current && progress.total_steps ? ((current.order - 1) / progress.total_steps) * 100 : 0;
    return {
      status: execution.status,
      percentage: execution.status === "completed" ? 100 : Math.max(progress.percentage, floor),
      current: current?.name ?? null,
    };
  }

  function render() {
    const now = Date.now();
    fill(
      list,
      executions.map((execution) => {
        const bar = progressBar(`Progress of ${execution.workflow_name}`);
        const { status, percentage, current } = summary(execution);
        bar.set(percentage, status);
        return h(
          "li",
          { dataset: { executionId: execution.execution_id, status } },
          h(
            "a",
            {
              class: "recent-item",
              href: `#/executions/${encodeURIComponent(execution.execution_id)}`,
              "aria-current": execution.execution_id === selected ? "page" : null,
            },
            h(
              "span",
              { class: "recent-title" },
              h("span", { class: "recent-name" }, execution.workflow_name || "(unnamed workflow)"),
              h("span", { class: `badge status-${status}` }, status),
            ),
            bar.element,
            h(
              "span",
              { class: "recent-meta" },
              h("code", {}, shortId(execution.execution_id)),
              ` · ${percent(percentage)}`,
              current && !TERMINAL.has(status) ? ` · ${current}` : "",
              h("time", { datetime: execution.created_at, title: execution.created_at }, ` · ${ago(execution.created_at, now)}`),
            ),
          ),
        );
      }),
    );
    empty.hidden = executions.length > 0;
    setText(empty, filtering(filters) ? "No executions match these filters." : "No executions yet.");
    more.hidden = !nextPageToken || shown >= MAX_SHOWN;
  }

  // --- the filters -------------------------------------------------------------------

  const boxes = STATUSES.map((status) =>
    h("input", { type: "checkbox", name: "status", value: status, id: `filter-status-${status}` }),
  );
  fill(
    statusBox,
    boxes.map((box) => h("label", { class: "chip", for: box.id }, box, h("span", { class: `badge status-${box.value}` }, box.value))),
  );

  function workflowOptions() {
    const names = new Map();
    for (const workflow of workflows) names.set(workflow.name, (names.get(workflow.name) ?? 0) + 1);
    const options = [...workflows]
      .sort((a, b) => a.name.localeCompare(b.name) || a.workflow_id.localeCompare(b.workflow_id))
      .map((workflow) =>
        h(
          "option",
          { value: workflow.workflow_id },
          names.get(workflow.name) > 1 ? `${workflow.name} (${shortId(workflow.workflow_id)})` : workflow.name,
        ),
      );
    if (filters.workflowId && !workflows.some((w) => w.workflow_id === filters.workflowId)) {
      // Asked for by the address: kept (and shown) even before, or without, the list of workflows.
      options.unshift(h("option", { value: filters.workflowId }, `workflow ${shortId(filters.workflowId)}`));
    }
    fill(workflowSelect, h("option", { value: "" }, "All workflows"), options);
    workflowSelect.value = filters.workflowId;
  }

  function showFilters() {
    for (const box of boxes) box.checked = filters.statuses.includes(box.value);
    workflowOptions();
    if (nameInput.value !== filters.name) nameInput.value = filters.name;
    clear.hidden = !filtering(filters);
  }

  function readFilters() {
    return {
      statuses: boxes.filter((box) => box.checked).map((box) => box.value),
      workflowId: workflowSelect.value,
      name: nameInput.value.trim(),
    };
  }

  let typing = null;

  function apply(next) {
    clearTimeout(typing);
    const same = JSON.stringify(next) === JSON.stringify(filters);
    filters = next;
    clear.hidden = !filtering(filters);
    writeUrl(filters);
    if (same) return;
    shown = LIMIT;
    nextPageToken = null;
    refresh();
  }

  for (const box of boxes) box.addEventListener("change", () => apply(readFilters()));
  workflowSelect.addEventListener("change", () => apply(readFilters()));
  nameInput.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => apply(readFilters()), TYPING_MS);
  });
  form.addEventListener("submit", (submit) => {
    submit.preventDefault();
    apply(readFilters());
  });
  clear.addEventListener("click", () => {
    for (const box of boxes) box.checked = false;
    workflowSelect.value = "";
    nameInput.value = "";
    apply(readFilters());
    nameInput.focus();
  });

  showFilters();
  api
    .workflows()
    .then((all) => {
      workflows = all;
      workflowOptions();
    })
    .catch((error) => {
      setText(note, `workflows not read: ${error.message}`);
      note.dataset.kind = "error";
    });

  // Only the latest call's answer is shown, and only it schedules the next one.
  let generation = 0;

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    try {
      const answer = await api.recentExecutions(shown, filters);
      if (mine !== generation) return;
      executions = answer.executions;
      nextPageToken = answer.next_page_token ?? null;
      render();
      setText(note, `updated ${new Date().toLocaleTimeString()}`);
      note.dataset.kind = "info";
    } catch (error) {
      if (mine !== generation) return;
      setText(note, `not updated: ${error.message}`);
      note.dataset.kind = "error";
    }
    if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
  }

  more.addEventListener("click", async () => {
    if (!nextPageToken) return;
    clearTimeout(timer);
    const mine = ++generation; // a refresh on its way would drop this page: it is dropped
    more.disabled = true;
    try {
      const page = await api.recentExecutions(Math.min(LIMIT, MAX_SHOWN - shown), filters, nextPageToken);
      if (mine !== generation) return;
      const known = new Set(executions.map((e) => e.execution_id));
      executions = executions.concat(page.executions.filter((e) => !known.has(e.execution_id)));
      shown = Math.min(MAX_SHOWN, shown + LIMIT);
      nextPageToken = page.next_page_token ?? null;
      render();
      note.dataset.kind = "info";
    } catch (error) {
      if (mine !== generation) return;
      setText(note, `older executions not read: ${error.message}`);
      note.dataset.kind = "error";
    } finally {
      more.disabled = false;
    }
    if (mine === generation && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
    else clearTimeout(timer);
  });

  refresh();
  return {
    refresh,
    select(executionId) {
      selected = executionId;
      live = null;
      render();
    },
    /** The open execution's live state: {executionId, status, percentage, current}. */
    live(state) {
      const changed =
        live === null ||
        live.status !== state.status ||
        Math.floor(live.percentage) !== Math.floor(state.percentage) ||
        live.current !== state.current;
      live = state;
      if (changed && executions.some((e) => e.execution_id === state.executionId)) render();
    },
  };
}
