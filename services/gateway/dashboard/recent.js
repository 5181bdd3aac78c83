// The list of recent executions: GET /executions, newest first, refreshed every few seconds
// while the page is visible (and at once when asked, e.g. after an upload).

import { api } from "./api.js";
import { fill, h, progressBar, setText } from "./dom.js";
import { ago, percent, shortId } from "./format.js";
import { TERMINAL } from "./model.js";

const LIMIT = 20;
const REFRESH_MS = 3000;

export function setupRecent({ list, empty, note }) {
  let selected = null;
  let timer = null;
  let executions = [];
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
  }

  // Only the latest call's answer is shown, and only it schedules the next one.
  let generation = 0;

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    try {
      const answer = await api.recentExecutions(LIMIT);
      if (mine !== generation) return;
      executions = answer.executions;
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
