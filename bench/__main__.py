"""`python -m bench [SCENARIO ...] [--rounds N] [--quick]`: Discovery measured end to end.

Every service runs as its own process on 127.0.0.1: the database (`secantusd-py`), the engine,
pioneer (with bench/steps.py loaded through PIONEER_STEP_MODULES) and the gateway; this
process is the gRPC client, and fan-out's WebSockets live in client processes of their own.

Scenarios (all by default): `storage` (what the database allows: single and batched durable
inserts), `latency` (5 steps x 3 progress reports, runs in sequence: start+watch and the sync
ExecuteWorkflow), `throughput` (500 runs at once, each watched), `fanout` (one run, 1,000
WebSockets on one gateway), `soak` (3 tenants on a stack of their own, under quotas: two run
5-step workflows alone, beside an abuser, alone again; their p50/p99 both ways, the ratio),
`engines` (200 runs at once on one engine, then on two engines on one database; runs/s of
each and each process's CPU per run), `replica` (cross-replica watch latency: a second
engine on the database; progress reported to the first, watched on both; acknowledged ->
received p50/p99 on each), and only when named `search` (ListExecutions' time among
100,000 ended executions by status, time, workflow and name; `--search-executions N`). Each
but soak repeats --rounds times (3) against a database
that does not fsync; soak runs once next; then storage/latency/throughput again against one
that fsyncs at every commit, with as many rounds as the time bound (--budget) leaves. CPU
seconds per run come from /proc/<pid>/stat over latency, throughput and engines.

Exit status 1 when a run did not complete or a watch missed progress events; figures that
miss their targets are printed as MISS and do not change the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.stack import (
    CLIENT_MAX_CALLS,
    ENGINE_MAX_RPCS,
    GATEWAY_MAX_STREAMS,
    MAX_BURST,
    PIONEER_SLOTS,
    SOAK_QUOTAS,
    TENANT_MAX_CALLS,
    Stack,
)

ALL = ("storage", "latency", "throughput", "engines", "fanout", "replica", "soak")
# Run only when named: on the embedded database a query among 100,000 executions takes tens of
# seconds (it sorts in Python), more than the default bound leaves.
ON_REQUEST = ("search",)
# The fsync set repeats the figures that storage durability can change.
FSYNC_SCENARIOS = ("storage", "latency", "throughput")
RESULTS = Path(__file__).resolve().parent / "results"
# Reserved at the end of the budget: stopping the services, writing the chart.
CLOSING_SECONDS = 20.0


@dataclass
class SetResult:
    rounds: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.end = time.monotonic() + float(args.budget)
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.sets: dict[str, SetResult] = {}

    def left(self) -> float:
        return self.end - time.monotonic() - CLOSING_SECONDS

    def say(self, text: str) -> None:
        print(text, flush=True)

    async def round_of(self, scenario: str, stack: Stack) -> scenarios.Round:
        a = self.args
        if scenario == "storage":
            return await scenarios.storage(stack.uri, stack.workdir, 500, 50, seconds=5.0)
        if scenario == "latency":
            return await scenarios.latency(stack, a.latency_runs, a.warmup, a.latency_deadline)
        if scenario == "throughput":
            return await scenarios.throughput(stack, a.throughput_runs, a.throughput_deadline)
        if scenario == "soak":
            return await scenarios.soak(stack, a.soak_seconds, tuple(a.soak_abuse.split(",")))
        if scenario == "engines":
            return await scenarios.engines(stack, a.engines_runs, a.throughput_deadline)
        if scenario == "replica":
            return await scenarios.replica_watch(stack, a.replica_reports, a.replica_interval)
        if scenario == "search":
            return await scenarios.search(stack, a.search_executions, a.search_queries)
        return await scenarios.fanout(stack, a.sockets, a.ws_processes, a.reports, a.interval)

    def estimate(self, scenario: str, name: str) -> float:
        """Seconds the next round of `scenario` should take on set `name`: its own last round,
        else the default set's, else the scenario's deadline."""
        for source in (name, "default"):
            taken = self.sets.get(source, SetResult()).seconds.get(scenario)
            if taken:
                return max(taken) * (1.5 if source != name else 1.1)
        a = self.args
        first_guess: dict[str, float] = {
            "storage": 12.0,
            "latency": a.latency_deadline,
            "throughput": a.throughput_deadline + 30,
            "engines": 2 * a.throughput_deadline + 45,
            "fanout": 40.0,
            "replica": a.replica_reports * (a.replica_interval + 0.01) + 30,
            "soak": 2 * a.soak_seconds + 40,
            # Writing the copies, once per stack (a few thousand a second), then the queries.
            "search": a.search_executions / 2000 + 30,
        }
        return first_guess[scenario]

    async def run_set(self, name: str, chosen: list[str], rounds: int, bounded: bool) -> None:
        """Rounds interleaved across scenarios, so that a short budget still gives each
        scenario a round. `bounded`: a round that would not fit the budget is not started."""
        result = self.sets.setdefault(name, SetResult())
        stack = Stack(
            sync_on_commit=name == "fsync", quotas=SOAK_QUOTAS if name == "soak" else None
        )
        self.say(f"\n== {report.SETS[name]}: starting the database and the services")
        await stack.start()
        try:
            for n in range(1, rounds + 1):
                for scenario in chosen:
                    if bounded and self.estimate(scenario, name) > self.left():
                        result.skipped.setdefault(
                            scenario,
                            f"{scenario}: {n - 1} of {rounds} rounds on '{report.SETS[name]}' "
                            f"(the next would exceed the {self.args.budget:.0f} s bound)",
                        )
                        continue
                    began = time.monotonic()
                    before = len(self.failures)
                    one = await self.round_of(scenario, stack)
                    took = time.monotonic() - began
                    stack.check_alive()
                    storage = (result.rounds.get("storage") or [{}])[-1]
                    report.derive(scenario, one.figures, storage)
                    result.rounds.setdefault(scenario, []).append(one.figures)
                    result.seconds.setdefault(scenario, []).append(took)
                    for key, values in one.samples.items():
                        result.samples.setdefault(key, []).extend(values)
                    self.failures += [f"[{report.SETS[name]}, round {n}] {f}" for f in one.failures]
                    self.notes += one.notes
                    self.say(
                        f"  {scenario} round {n}: {took:.1f} s  "
                        + brief(scenario, one.figures)
                        + ("  FAILURE" if len(self.failures) > before else "")
                    )
                    for failure in one.failures:
                        self.say(f"  !! FAILURE: {failure}")
        finally:
            await stack.stop()

    async def run(self) -> int:
        a = self.args
        chosen = [s for s in (*ALL, *ON_REQUEST) if s in a.scenarios]
        self.say(
            f"Discovery bench: {', '.join(chosen)}; {a.rounds} round(s); bound {a.budget:.0f} s. "
            f"Services: engine (ENGINE_START_RATE=1000000, ENGINE_START_BURST={MAX_BURST}, "
            f"ENGINE_MAX_CONCURRENT_RPCS={ENGINE_MAX_RPCS}), pioneer "
            f"(PIONEER_MAX_CONCURRENT_STEPS={PIONEER_SLOTS}), gateway (stream caps and open "
            f"rate lifted to {GATEWAY_MAX_STREAMS}), secantusd-py; each its own process. "
            f"The one bench tenant's quotas lifted (ENGINE_TENANT_MAX_CALLS and _LONG_CALLS="
            f"{TENANT_MAX_CALLS}, ENGINE_CLIENT_MAX_CALLS={CLIENT_MAX_CALLS})."
            + (
                " Soak has a stack of its own, with quotas: "
                + " ".join(f"{k}={v}" for k, v in SOAK_QUOTAS.items())
                if "soak" in chosen
                else ""
            )
        )
        if default := [s for s in chosen if s != "soak"]:
            await self.run_set("default", default, a.rounds, bounded=False)
        if "soak" in chosen:
            # Once, before the fsync set: that set takes what the bound leaves.
            await self.run_set("soak", ["soak"], 1, bounded=True)
            if not self.sets["soak"].rounds:
                self.notes.append(self.sets["soak"].skipped.get("soak", "soak: not run"))
        fsync_chosen = [s for s in chosen if s in FSYNC_SCENARIOS]
        if a.fsync_rounds and fsync_chosen:
            await self.run_set("fsync", fsync_chosen, a.fsync_rounds, bounded=True)
            for scenario in fsync_chosen:
                done = len(self.sets["fsync"].rounds.get(scenario, []))
                if done < a.rounds:
                    reason = self.sets["fsync"].skipped.get(scenario, "")
                    self.notes.append(
                        f"fsync set reduced to fit the time bound: {reason or scenario}"
                        if reason
                        else f"fsync set: {scenario} ran {done} of {a.rounds} rounds"
                        f" (--fsync-rounds {a.fsync_rounds})"
                    )
        return self.finish(chosen)

    def finish(self, chosen: list[str]) -> int:
        a = self.args
        summaries = {
            name: {scenario: report.summarise(rounds) for scenario, rounds in result.rounds.items()}
            for name, result in self.sets.items()
        }
        self.notes[:0] = [
            f"rounds: {a.rounds} on the set without fsync; medians with (min-max) over rounds",
            f"latency: {a.warmup} warm-up + {a.latency_runs} measured runs per mode per round, "
            f"in sequence (p99 of {a.latency_runs} runs is the slowest of each round)",
            f"throughput: {a.throughput_runs} runs started at once, each watched from seq 1; "
            f"deadline {a.throughput_deadline:.0f} s per round; unfinished runs are cancelled; "
            f"pioneer slots {PIONEER_SLOTS}",
            f"fan-out: {a.sockets} WebSockets over {a.ws_processes} client process(es) on one "
            f"fresh gateway per round; {a.reports} reports {a.interval} s apart; delivery to "
            "the last socket per report (send time from the step, shared clock)",
            "CPU ms/run: utime+stime from /proc over the measured runs; client = this process",
            f"engines: {a.engines_runs} runs at once on one engine (A), then on A and a second"
            " engine (B) on the same database, started alternately and watched where they"
            " started; one pioneer, polling A (B's steps reach it through the cluster-wide"
            " queue); everything on the same 2 cores",
            f"replica: a second engine on the database; {a.replica_reports} progress reports "
            f"{a.replica_interval} s apart to engine A by this process (as the step's runner), "
            "watched on B (through its change feed) and on A (in-process, the baseline); "
            "report acknowledged -> event received on this process's clock (below zero when "
            "the event overtakes A's reply), and report sent -> event received",
            f"search: {a.search_executions} ended executions of the bench tenant (copies of one"
            " run, written to the database directly; 30 days, 10 workflows, 15 % failed),"
            f" then ListExecutions for a page of 20, {a.search_queries} calls per shape: the"
            " newest; failed; failed in the last hour; one workflow's; by name",
            f"soak: 2 good tenants run 5-step workflows in sequence, {a.soak_seconds / 2:.0f} s "
            f"alone, {a.soak_seconds:.0f} s beside an abuser, {a.soak_seconds / 2:.0f} s alone "
            "again (the abuser, through the gateway: ~1 MiB manual starts, "
            "WebSockets on each execution it got, 30 sync executes held, 2 steps reporting "
            "progress every 20 ms; it retries as soon as Retry-After allows); good tenants "
            "call the engine directly; all clients in this process",
        ]
        results: dict[str, Any] = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
            "sets": {
                name: {
                    "label": report.SETS[name],
                    "rounds": result.rounds,
                    "round_seconds": result.seconds,
                    "samples": result.samples,
                }
                for name, result in self.sets.items()
            },
            "summary": summaries,
            "notes": self.notes,
            "failures": self.failures,
        }
        lines = report.table(summaries)
        self.say("\n" + report.plain(lines) + "\n")
        for note in self.notes:
            self.say(f"- {note}")
        paths = report.write(results, lines, a.out)
        self.say("\nwritten: " + ", ".join(str(p) for p in paths))
        if self.failures:
            self.say("\n" + "!" * 72)
            self.say(f"BENCH FAILED: {len(self.failures)} correctness failure(s)")
            for failure in self.failures:
                self.say(f"  - {failure}")
            self.say("!" * 72)
            return 1
        return 0


def brief(scenario: str, figures: dict[str, float]) -> str:
    keys = {
        "storage": ("single_inserts_per_s", "batched_inserts_per_s"),
        "latency": ("start_watch_p50_ms", "start_watch_p99_ms", "execute_p50_ms"),
        "throughput": ("runs_per_s", "completed", "progress_seen", "events_per_s"),
        "fanout": ("to_last_p50_ms", "to_last_p99_ms", "rss_per_socket_kib", "sockets"),
        "engines": ("one_runs_per_s", "two_runs_per_s", "two_over_one"),
        "replica": ("replica_p50_ms", "replica_p99_ms", "same_engine_p50_ms", "same_engine_p99_ms"),
        "search": tuple(f"search_{name}_p50_ms" for name in scenarios.SEARCHES),
        "soak": (
            "alone_p50_ms",
            "alone_p99_ms",
            "abused_p50_ms",
            "abused_p99_ms",
            "p99_ratio",
            "abuser_refused",
        ),
    }[scenario]
    return "  ".join(f"{k}={figures[k]:.1f}" for k in keys if k in figures)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join((*ALL, *ON_REQUEST))} (default: all but {', '.join(ON_REQUEST)})",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--fsync-rounds",
        type=int,
        default=None,
        help="rounds of the fsync set (default: --rounds, fewer if the bound requires; 0 skips it)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round, no fsync set: for trying a change"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=570.0,
        help="seconds the whole bench may take; the fsync set gets the rest",
    )
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--latency-deadline", type=float, default=120.0)
    parser.add_argument("--throughput-runs", type=int, default=500)
    parser.add_argument(
        "--throughput-deadline",
        type=float,
        default=45.0,
        help="seconds per throughput round; runs unfinished by then are failures",
    )
    parser.add_argument(
        "--engines-runs",
        type=int,
        default=200,
        help="runs at once in each half of the engines scenario (throughput's 500 make commits"
        " of several seconds on the embedded database, and two engines then fence each other)",
    )
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--ws-processes", type=int, default=2)
    parser.add_argument("--reports", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument(
        "--replica-reports",
        type=int,
        default=200,
        help="progress reports of the replica scenario (at most the engine's progress burst)",
    )
    parser.add_argument("--replica-interval", type=float, default=0.02)
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=45.0,
        help="each of soak's two phases (good tenants alone, then beside the abuser)",
    )
    parser.add_argument(
        "--soak-abuse",
        default=",".join(scenarios.SOAK_ABUSES),
        help="what the soak's abuser does, comma-separated (to see what each costs)",
    )
    parser.add_argument(
        "--search-executions",
        type=int,
        default=100_000,
        help="search: ended executions to search among (default: %(default)s)",
    )
    parser.add_argument(
        "--search-queries", type=int, default=3, help="search: calls of each query shape"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(ALL) - set(ON_REQUEST))
    if unknown:
        known = ", ".join((*ALL, *ON_REQUEST))
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {known}")
    args.scenarios = args.scenarios or list(ALL)
    if args.quick:
        args.rounds = 1
        args.fsync_rounds = 0 if args.fsync_rounds is None else args.fsync_rounds
    if args.fsync_rounds is None:
        args.fsync_rounds = args.rounds
    if args.throughput_runs > MAX_BURST:
        parser.error(f"--throughput-runs: at most {MAX_BURST} (the engine's start burst)")
    if not set(args.soak_abuse.split(",")) <= set(scenarios.SOAK_ABUSES):
        parser.error(f"--soak-abuse: any of {', '.join(scenarios.SOAK_ABUSES)}")
    if not math.isfinite(args.budget) or args.budget <= CLOSING_SECONDS:
        parser.error(f"--budget: more than {CLOSING_SECONDS:.0f} s")
    return args


def main() -> int:
    return asyncio.run(Bench(parse(sys.argv[1:])).run())


if __name__ == "__main__":
    raise SystemExit(main())
