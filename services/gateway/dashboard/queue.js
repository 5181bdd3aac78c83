// The step queue panel: GET /queue every few seconds while the page is visible. How many
// steps wait for a runner, by handler (this tenant's and every tenant's), how long the oldest
// has waited, and the runners that polled lately with their free slots.

import { api } from "./api.js";
import { fill, h, setText } from "./dom.js";
import { ago, duration } from "./format.js";

const REFRESH_MS = 3000;

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

export function setupQueue({ summary, table, rows, runners, note }) {
  let timer = null;
  let stopped = false;
  // Only the latest call's answer is shown, and only it schedules the next one.
  let generation = 0;

  function render(queue) {
    const mine = new Map(queue.tenant.map((d) => [d.handler, d]));
    const handlers = [...new Set([...queue.total.map((d) => d.handler), ...mine.keys()])].sort();
    const yours = queue.tenant.reduce((sum, d) => sum + d.ready, 0);
    const everyone = queue.total.reduce((sum, d) => sum + d.ready, 0);
    setText(
      summary,
      everyone === 0 ? "Nothing waits for a runner." : `${plural(everyone, "step")} waiting for a runner, ${yours} of them yours.`,
    );
    table.hidden = handlers.length === 0;
    fill(
      rows,
      handlers.map((handler) => {
        const own = mine.get(handler);
        const total = queue.total.find((d) => d.handler === handler);
        // The oldest wait of this tenant's own steps; of everyone's when none is yours.
        const oldest = own ?? total;
        return h(
          "tr",
          { dataset: { handler, ready: own?.ready ?? 0 } },
          h("th", { scope: "row" }, handler),
          h("td", { class: "num" }, own?.ready ?? 0),
          h("td", { class: "num" }, total?.ready ?? own?.ready ?? 0),
          h("td", { class: "num", title: oldest?.oldest_queued_at ?? "" }, duration(oldest?.oldest_wait_seconds)),
        );
      }),
    );
    const now = Date.now();
    fill(
      runners,
      queue.runners.length === 0
        ? h("li", { class: "hint" }, "No runner polled in the last minutes: queued steps wait for one.")
        : queue.runners.map((runner) =>
            h(
              "li",
              { dataset: { runnerId: runner.runner_id } },
              h("code", { class: "runner-id" }, runner.runner_id),
              h(
                "span",
                { class: "runner-meta" },
                `${plural(runner.free_slots, "free slot")} · polled ${ago(runner.last_poll_at, now)}`,
              ),
              h("span", { class: "runner-handlers" }, runner.handlers.join(", ")),
            ),
          ),
    );
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    try {
      const queue = await api.queue();
      if (mine !== generation) return;
      render(queue);
      setText(note, `updated ${new Date().toLocaleTimeString()}`);
      note.dataset.kind = "info";
    } catch (error) {
      if (mine !== generation) return;
      setText(note, `not updated: ${error.message}`);
      note.dataset.kind = "error";
      // A token whose role may not read the queue will not be let in on the next try.
      if (error.status === 403) stopped = true;
    }
    if (!document.hidden && !stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (stopped) return;
    if (!document.hidden) refresh();
    else clearTimeout(timer);
  });

  refresh();
  return { refresh };
}
