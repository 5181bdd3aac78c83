// When each step ran, on one time axis: a lane per step and a bar per attempt (light while it
// waited in the step queue, solid while it ran), so steps that ran side by side are bars that
// overlap. The execution view shows it for runs whose steps may run at once; a straight line
// reads as well from the steps and the history.
//
// It needs nothing but the attempts' times, so a watch token (which may not read the
// workflow's definition) sees the branches side by side here too.

import { h, setText } from "./dom.js";
import { duration, time } from "./format.js";

const LIVE = new Set(["queued", "running"]);

function instant(iso) {
  const value = iso ? Date.parse(iso) : Number.NaN;
  return Number.isNaN(value) ? null : value;
}

/** The attempt's time on the axis: {from, started, to} in ms, or null if it has none yet. */
function span(attempt, now) {
  const from = instant(attempt.queued_at) ?? instant(attempt.started_at);
  if (from === null) return null;
  const started = instant(attempt.started_at);
  const finished = instant(attempt.finished_at);
  const to = finished ?? (LIVE.has(attempt.status) ? now : (started ?? from));
  return { from, started, to: Math.max(from, to) };
}

/**
 * Whether two steps' attempts were ever queued or running at the same moment (strictly: in a
 * straight line a step is queued when the one before it finishes, at the same instant).
 */
export function ranSideBySide(model, now = Date.now()) {
  const spans = model.steps.flatMap((step) =>
    step.attempts.map((a) => ({ step: step.name, ...span(a, now) })).filter((s) => s.from !== undefined),
  );
  for (let i = 0; i < spans.length; i += 1) {
    for (let j = i + 1; j < spans.length; j += 1) {
      const [a, b] = [spans[i], spans[j]];
      if (a.step !== b.step && a.from < b.to && b.from < a.to) return true;
    }
  }
  return false;
}

function describe(step, attempt, s, start) {
  const at = `from +${duration((s.from - start) / 1000)}`;
  const waited = s.started === null ? s.to - s.from : s.started - s.from;
  const ran = s.started === null ? null : s.to - s.started;
  return [
    `${step.name}, attempt ${attempt.attempt}: ${attempt.status}`,
    at,
    waited >= 1000 ? `${duration(waited / 1000)} queued` : "",
    ran === null ? "" : `ran ${duration(ran / 1000)}`,
  ]
    .filter(Boolean)
    .join(", ");
}

/** The card: {element, update(model, now)}; hidden until update() is told to show it. */
export function createLanes() {
  const start = h("time", {});
  const extent = h("span", {});
  const list = h("ol", { class: "lanes", "aria-label": "When each step ran" });
  const element = h(
    "section",
    { class: "card lanes-card", "aria-labelledby": "lanes-title", hidden: true },
    h("h3", { id: "lanes-title", class: "card-title" }, "Side by side in time"),
    h(
      "p",
      { class: "hint" },
      "A lane per step, a bar per attempt: light while it waited for a runner, solid while it ran. Bars that overlap ran at the same time.",
    ),
    h("p", { class: "lanes-axis" }, h("span", {}, "Started ", start), extent),
    list,
  );
  let lanes = new Map(); // step name → {element, track, bars: [{bar, wait, run}]}
  let names = "";

  function lane(step) {
    const track = h("div", { class: "lane-track" });
    const row = h(
      "li",
      { class: "lane", dataset: { step: step.name } },
      h("span", { class: "lane-name" }, step.name),
      track,
    );
    return { element: row, track, bars: [] };
  }

  function bar(entry, index) {
    while (entry.bars.length <= index) {
      const wait = h("span", { class: "lane-wait" });
      const run = h("span", { class: "lane-run" });
      const element = h("span", { class: "lane-bar", role: "img" }, wait, run);
      entry.track.append(element);
      entry.bars.push({ element, wait, run });
    }
    return entry.bars[index];
  }

  function update(model, now, shown) {
    element.hidden = !shown;
    if (!shown) return;
    const key = model.steps.map((s) => s.name).join("\u0000");
    if (key !== names) {
      names = key;
      lanes = new Map(model.steps.map((s) => [s.name, lane(s)]));
      list.replaceChildren(...[...lanes.values()].map((l) => l.element));
    }
    const spans = model.steps.map((step) => step.attempts.map((a) => span(a, now)));
    const all = spans.flat().filter((s) => s !== null);
    const first = Math.min(...all.map((s) => s.from));
    const last = Math.max(...all.map((s) => s.to));
    const width = Math.max(last - first, 1000);
    const at = (value) => `${(100 * (value - first)) / width}%`;
    if (all.length > 0) {
      const iso = new Date(first).toISOString();
      start.setAttribute("datetime", iso);
      setText(start, time(iso));
      setText(extent, `+${duration(width / 1000)}`);
    }
    model.steps.forEach((step, i) => {
      const entry = lanes.get(step.name);
      let shownBars = 0;
      step.attempts.forEach((attempt, j) => {
        const s = spans[i][j];
        if (s === null) return;
        const { element: barElement, wait, run } = bar(entry, shownBars);
        shownBars += 1;
        barElement.hidden = false;
        barElement.dataset.status = attempt.status;
        barElement.dataset.attempt = String(attempt.attempt);
        barElement.style.left = at(s.from);
        barElement.style.width = `${(100 * (s.to - s.from)) / width}%`;
        const label = describe(step, attempt, s, first);
        barElement.setAttribute("aria-label", label);
        barElement.title = label;
        const length = Math.max(s.to - s.from, 1);
        const queuedPart = s.started === null ? 100 : (100 * (s.started - s.from)) / length;
        wait.style.width = `${queuedPart}%`;
        run.style.left = `${queuedPart}%`;
        run.style.width = `${100 - queuedPart}%`;
      });
      for (const rest of entry.bars.slice(shownBars)) rest.element.hidden = true;
    });
  }

  return { element, update };
}
