"""From rounds to what a reader sees: medians with their spread (min-max) for each database
set side by side, targets marked PASS/MISS, and the JSON, markdown and PNG files."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETS = {
    "default": "no fsync (not crash-safe)",
    "fsync": "fsync at commit (the default)",
    "soak": "3 tenants under quotas",
}


@dataclass(frozen=True)
class Row:
    scenario: str
    key: str
    label: str
    unit: str
    # (text, passes) of the target; None: no target, the figure informs.
    target: tuple[str, Callable[[float], bool]] | None = None
    digits: int = 0


def at_most(limit: float, unit: str) -> tuple[str, Callable[[float], bool]]:
    return f"≤ {limit:g} {unit}", lambda value: value <= limit


def at_least(limit: float, unit: str) -> tuple[str, Callable[[float], bool]]:
    return f"≥ {limit:g} {unit}", lambda value: value >= limit


ROWS = [
    Row("storage", "disk_fsyncs_per_s", "disk: fsyncs/s of small appends (no database)", "/s"),
    Row("storage", "single_inserts_per_s", "storage: single durable inserts/s", "/s"),
    Row("storage", "batched_inserts_per_s", "storage: inserts/s in batches of 100", "/s"),
    *(
        Row("latency", f"start_watch_p{q}_ms", f"latency start+watch p{q}", "ms", target)
        for q, target in ((50, at_most(45, "ms")), (90, None), (99, at_most(60, "ms")))
    ),
    *(
        Row("latency", f"execute_p{q}_ms", f"latency ExecuteWorkflow p{q}", "ms", target)
        for q, target in ((50, at_most(45, "ms")), (90, None), (99, at_most(60, "ms")))
    ),
    Row("throughput", "runs_per_s", "throughput: runs/s", "/s", at_least(40, "runs/s"), 1),
    Row("throughput", "completed", "throughput: runs completed", ""),
    Row("throughput", "events_per_s", "throughput: durable events/s", "/s"),
    Row("throughput", "events_share_of_single", "  as % of single inserts/s", "%", None, 1),
    Row("throughput", "events_share_of_batched", "  as % of batched inserts/s", "%", None, 1),
    Row("throughput", "progress_seen", "throughput: progress events seen on watches", ""),
    *(
        Row(
            scenario,
            f"{prefix}cpu_ms_{process}",
            f"CPU ms/run, {label}: {process}",
            "ms",
            at_most(40, "ms") if process == "engine+database" else None,
            1,
        )
        for scenario, prefix, label in (
            ("latency", "latency_start_watch_", "latency start+watch"),
            ("throughput", "throughput_", "throughput"),
        )
        for process in ("engine", "database", "engine+database", "pioneer", "client")
    ),
    *(
        Row("soak", f"{phase}_p{q}_ms", f"soak: good tenants p{q}, {label}", "ms", None, 1)
        for phase, label in (("alone", "alone"), ("abused", "with the abuser"))
        for q in (50, 99)
    ),
    *(
        Row("engines", f"{n}_runs_per_s", f"scale-out: runs/s on {label}", "/s", None, 1)
        for n, label in (("one", "one engine"), ("two", "two engines"))
    ),
    Row("engines", "two_over_one", "scale-out: two engines / one", "x", None, 2),
    *(
        Row("engines", f"{n}_cpu_ms_{process}", f"  CPU ms/run, {label}: {process}", "ms", None, 1)
        for n, label in (("one", "one engine"), ("two", "two engines"))
        for process in ("engine", "engine_b", "database", "pioneer", "client")
        if not (n == "one" and process == "engine_b")
    ),
    Row("soak", "p50_ratio", "soak: good tenants p50 with / without the abuser", "x", None, 2),
    Row(
        "soak",
        "p99_ratio",
        "soak: good tenants p99 with / without the abuser",
        "x",
        at_most(2, "x"),
        2,
    ),
    Row("soak", "abuser_accepted", "soak: abuser calls accepted", ""),
    Row("soak", "abuser_refused", "soak: abuser calls refused (429)", ""),
    Row("fanout", "to_last_p50_ms", "fan-out: report → last socket p50", "ms", None, 1),
    Row(
        "fanout", "to_last_p99_ms", "fan-out: report → last socket p99", "ms", at_most(100, "ms"), 1
    ),
    Row("fanout", "any_socket_p50_ms", "fan-out: report → a socket p50", "ms", None, 1),
    Row("replica", "replica_p50_ms", "watch on another engine: ack → received p50", "ms", None, 1),
    Row(
        "replica",
        "replica_p99_ms",
        "watch on another engine: ack → received p99",
        "ms",
        at_most(100, "ms"),
        1,
    ),
    Row("replica", "same_engine_p50_ms", "watch on the same engine: p50 (baseline)", "ms", None, 1),
    Row("replica", "same_engine_p99_ms", "watch on the same engine: p99 (baseline)", "ms", None, 1),
    *(
        Row("replica", f"{who}_from_sent_p{q}_ms", f"  {label}: sent → got p{q}", "ms", None, 1)
        for who, label in (("replica", "another engine"), ("same_engine", "same engine"))
        for q in (50, 99)
    ),
    Row("search", "search_insert_docs_per_s", "search: copies written/s (set-up)", "/s"),
    *(
        Row("search", f"search_{name}_p{q}_ms", f"search: {label} p{q}", "ms", None, 1)
        for name, label in (
            ("newest", "newest page"),
            ("failed", "failed"),
            ("failed_last_hour", "failed, last hour"),
            ("one_workflow", "one workflow's"),
            ("name", "by workflow name"),
        )
        for q in (50, 99)
    ),
    Row("fanout", "rss_per_socket_kib", "fan-out: gateway RSS per socket", "KiB", None, 1),
    Row("fanout", "gateway_cpu_share", "fan-out: gateway CPU (cores busy)", "", None, 2),
    Row("fanout", "clients_cpu_share", "fan-out: client processes CPU (cores)", "", None, 2),
]


def derive(scenario: str, figures: dict[str, float], storage: dict[str, float]) -> None:
    """Figures read against others: engine+database CPU, events against the storage limit."""
    for prefix in ("latency_start_watch_", "latency_execute_", "throughput_"):
        engine, database = f"{prefix}cpu_ms_engine", f"{prefix}cpu_ms_database"
        if engine in figures and database in figures:
            # NaN when no run completed: the sum stays NaN and is left out.
            figures[f"{prefix}cpu_ms_engine+database"] = figures[engine] + figures[database]
    if scenario == "throughput" and "events_per_s" in figures:
        for kind in ("single", "batched"):
            limit = storage.get(f"{kind}_inserts_per_s")
            if limit:
                figures[f"events_share_of_{kind}"] = 100 * figures["events_per_s"] / limit


def summarise(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = {key for figures in rounds for key in figures}
    summary = {}
    for key in sorted(keys):
        values = [f[key] for f in rounds if key in f and not math.isnan(f[key])]
        if values:
            summary[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "rounds": len(values),
            }
    return summary


def cell(row: Row, stat: dict[str, float] | None) -> str:
    if stat is None:
        return "not run"

    def number(value: float) -> str:
        return f"{value:,.{row.digits}f}"

    text = number(stat["median"])
    if stat["rounds"] > 1:
        text += f" ({number(stat['min'])}-{number(stat['max'])})"
    if row.target is not None:
        text += " PASS" if row.target[1](stat["median"]) else " MISS"
    return text


def table(summaries: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[list[str]]:
    """Header and rows: figure, each set's median (min-max) with PASS/MISS, target."""
    header = ["figure", *(SETS[name] for name in summaries), "target"]
    lines = [header]
    for row in ROWS:
        cells = [summaries[name].get(row.scenario, {}).get(row.key) for name in summaries]
        if all(c is None for c in cells):
            continue
        unit = f" ({row.unit})" if row.unit and row.unit not in ("/s",) else ""
        lines.append(
            [
                row.label + unit,
                *(cell(row, c) for c in cells),
                row.target[0] if row.target else "",
            ]
        )
    return lines


def plain(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def markdown(lines: list[list[str]], notes: list[str], failures: list[str]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    out.append("")
    out += [f"- {note}" for note in notes]
    if failures:
        out.append("")
        out.append("**FAILURES**")
        out += [f"- {failure}" for failure in failures]
    return "\n".join(out) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    """Latency distribution (empirical CDF of every measured run) and throughput per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name, label in SETS.items():
        samples = results["sets"].get(name, {}).get("samples", {})
        for key, kind in (("start_watch_ms", "start+watch"), ("execute_ms", "ExecuteWorkflow")):
            values = sorted(samples.get(key, []))
            if values:
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                left.step(values, fractions, where="post", label=f"{kind}, {label}")
    left.axvline(45, color="grey", linestyle=":", label="target p50 45 ms")
    left.axvline(60, color="grey", linestyle="--", label="target p99 60 ms")
    left.set_xlabel("run latency (ms)")
    left.set_ylabel("fraction of runs")
    left.set_title("Latency: 5 steps x 3 progress reports, runs in sequence")
    left.legend(fontsize=7)
    names, medians, low, high = [], [], [], []
    for name, label in SETS.items():
        stat = results["summary"].get(name, {}).get("throughput", {}).get("runs_per_s")
        if stat:
            names.append(label)
            medians.append(stat["median"])
            low.append(stat["median"] - stat["min"])
            high.append(stat["max"] - stat["median"])
    if names:
        right.bar(
            names, medians, yerr=[low, high], capsize=6, color=["#4c72b0", "#dd8452"][: len(names)]
        )
    right.axhline(40, color="grey", linestyle="--", label="target 40 runs/s")
    right.set_ylabel("completed runs/s (median, min-max)")
    right.set_title("Throughput: runs started at once")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], lines: list[list[str]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "latest.json", out / "latest.md", out / "latest.png"]
    paths[0].write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    paths[1].write_text(markdown(lines, results["notes"], results["failures"]))
    chart(results, paths[2])
    return paths
