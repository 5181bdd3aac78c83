"""`discovery`: the command line of the Discovery engine.

Parses the arguments, runs one command (commands.py) and turns every error into one
readable line on stderr and an exit code; a traceback is never what a user sees.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.text import Text

from discovery_client import Client, EngineError
from discovery_client.settings import DEFAULT_TARGET, DEFAULT_TIMEOUT_SECONDS, ENGINE_ENV, TOKEN_ENV
from services.auth import ADMIN, CLIENT, DEFAULT_TENANT, RUNNER, WATCHER
from services.certs import DEFAULT_HOSTS
from services.cli import commands, schedules
from services.cli.config import RETRIED_STARTS, engine_settings
from services.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError, UsageError
from services.cli.executions import STATUSES, Listing, executions_list
from services.cli.render import make_console
from services.cli.schedules import MAX_CATCHUP, OVERLAPS, NewSchedule

EPILOG = f"""\
engine:
  --engine HOST:PORT, else ${ENGINE_ENV}, else {DEFAULT_TARGET} (http://host:port is accepted;
  several engines: IP:PORT,IP:PORT or dns:///NAME:PORT, a name with every engine's address).
  Every call carries ${TOKEN_ENV}, else the file $DISCOVERY_TOKEN_FILE, else
  ./.discovery/token (written by `make run`).

exit codes:
  0    done; for run --watch and watch: the execution completed
  1    the execution failed or was cancelled (run --watch, watch)
  2    usage error, bad input (a definition, --input, --file), a refusal from the engine
       (unknown id, invalid field, not waiting…) or an engine that cannot be reached
  130  interrupted (Ctrl-C); a watched execution goes on

examples:
  discovery up
  discovery up --engines 3 --pioneers 2 --gateways 2
  discovery workflows create -f naps.yaml
  discovery run "Procesar Documentos" --file contrato.pdf --watch
  discovery watch EXECUTION_ID --json
  discovery retry EXECUTION_ID --from-step extract_text
  discovery queue
  discovery schedules create WORKFLOW --cron "0 3 * * *" --timezone Europe/Madrid
"""


ISSUABLE_ROLES = {CLIENT, ADMIN, RUNNER, WATCHER}
TOKEN_DAYS = 30
# Of each kind `up` runs: services/stack.py's bound.
MAX_SERVICES = 16

FOLLOW_EXIT_CODES = (
    "exit codes: 0 the execution completed, 1 it failed or was cancelled, 2 usage, input or "
    "engine errors, 130 interrupted (the execution goes on)"
)


def _count(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_SERVICES:
        raise argparse.ArgumentTypeError(f"{raw!r}: a number from 1 to {MAX_SERVICES}")
    return int(raw)


def build_parser() -> argparse.ArgumentParser:
    # Connection options are accepted before or after the command: `discovery --engine X
    # status ID` and `discovery status ID --engine X` both work. SUPPRESS keeps a
    # subcommand's absent option from overwriting the one given before it.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--engine",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,
        help=f"engine gRPC address (default: ${ENGINE_ENV} or {DEFAULT_TARGET})",
    )
    connection.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=argparse.SUPPRESS,
        help=f"deadline of each call (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output (watch: one JSON object per event line)",
    )

    parser = argparse.ArgumentParser(
        prog="discovery",
        description="Start, follow and steer Discovery workflow executions over gRPC.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection],
    )
    # No set_defaults for the shared options: it would rewrite the default of the very
    # action objects the subcommands share, and a subcommand would then reset --engine
    # given before it. Absent options are simply missing from the namespace (see dispatch).
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "up",
        help="start the whole stack (like `make run`); a cluster with --engines N…",
        description="Runs engines, pioneers and gateways on this machine as one group, on one "
        "embedded database, and prints where each listens: engines from ENGINE_PORT (50051) "
        "and pioneers from PIONEER_PORT (50052), 10 apart; gateways from GATEWAY_PORT (8080), "
        "1 apart. Ctrl-C stops everything.",
        parents=[connection],
    )
    for kind in ("engines", "pioneers", "gateways"):
        up.add_argument(
            f"--{kind}", type=_count, default=1, metavar="N", help=f"{kind} to run (default: 1)"
        )

    pioneer = sub.add_parser(
        "pioneer",
        help="run a step runner: the built-in steps and your own (--steps)",
        description="Pulls the attempts of its handlers from the engine's step queue and runs "
        "them until Ctrl-C or SIGTERM, configured like `python -m services.pioneer` (the "
        "PIONEER_* variables, its token key). --steps imports a module of yours whose "
        "handlers are declared with `@step` (services.pioneer.sdk); install your package in "
        "the same environment.",
        parents=[connection],
    )
    pioneer.add_argument(
        "--steps",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module of step handlers to import, e.g. mypkg.steps (repeatable; added to "
        "PIONEER_STEP_MODULES)",
    )

    secrets = sub.add_parser(
        "secrets",
        help="make a deployment's secrets: CA, a certificate and a token key per service",
        description="Writes into DIR what docker-compose.yml mounts, each service only its "
        "own: ca.crt and ca.key (a private CA); engine, pioneer, gateway and mongo .crt and "
        ".key (each service's certificate, for its compose name and --hosts), engine.pem and "
        "mongo.pem (certificate and key in one file, for MongoDB's TLS); the same for the "
        "cluster profile's engine-1..3 (also named 'engines'), pioneer-1..2, gateway-1..2 and "
        "mongo-1..3; tokens/engine.key, "
        "gateway.key, pioneer.key and operator.key (each signer's token key) and "
        "tokens/trusted-keys.json (the public keys and what each may sign); "
        "mongo-root-password and mongo-keyfile (MongoDB's root login and replica set key). "
        "Existing files are kept; a missing certificate is issued again from ca.key. "
        "ca.key and tokens/operator.key stay with you, off the servers.",
    )
    secrets.add_argument("directory", type=Path, metavar="DIR")
    secrets.add_argument(
        "--hosts",
        default=",".join(DEFAULT_HOSTS),
        help="names and addresses every certificate holds besides its service's name "
        "(default: %(default)s)",
    )

    issue = sub.add_parser(
        "token",
        help="issue a token (needs the operator's signing key)",
        description="Signs a token with the operator's key: DISCOVERY_SIGNING_KEY_FILE, else "
        "./.discovery/keys/operator.key (what `make run` made). Roles: "
        "client (start, read, watch, cancel, advance), admin (also workflow definitions), "
        "runner (takes and reports the tenant's steps; --tenant '*': every tenant's), "
        "watcher (one execution, read only). Prints the token.",
    )
    issue.add_argument("--role", required=True, choices=sorted(ISSUABLE_ROLES))
    issue.add_argument("--tenant", default=DEFAULT_TENANT, help="default: %(default)s")
    issue.add_argument("--subject", help="who holds it, for the logs (default: ROLE@TENANT)")
    issue.add_argument(
        "--ttl",
        type=float,
        default=TOKEN_DAYS * 86400,
        metavar="SECONDS",
        help="lifetime (default: %(default)g, 30 days)",
    )
    issue.add_argument("--execution", metavar="ID", help="watcher only: the one execution")

    workflows = sub.add_parser(
        "workflows", help="list, show, create and change workflow definitions"
    )
    wsub = workflows.add_subparsers(dest="workflows_command", metavar="ACTION", required=True)
    wsub.add_parser("list", help="every workflow, oldest first", parents=[connection, output])
    show = wsub.add_parser("show", help="one workflow and its steps", parents=[connection, output])
    show.add_argument("workflow", metavar="ID_OR_NAME")
    show.add_argument(
        "--version", type=int, default=0, metavar="N", help="that version (default: the current)"
    )
    versions = wsub.add_parser(
        "versions", help="every version of one workflow, newest first", parents=[connection, output]
    )
    versions.add_argument("workflow", metavar="ID_OR_NAME")
    create = wsub.add_parser(
        "create",
        help="create a workflow from a YAML or JSON definition, or apply a changed one",
        parents=[connection, output],
        description='The file: {"name", "description", "steps": [{"name", "handler", '
        '"timeout_seconds", "heartbeat_timeout_seconds", "schedule_to_start_timeout_seconds", '
        '"retry": {"max_attempts", '
        '"initial_backoff_seconds", "backoff_multiplier", "max_backoff_seconds"}}]}. '
        "A new name creates the workflow; the name of a workflow you have makes its next "
        "version if the file differs from its current one, and nothing if not (executions "
        "already started keep their version). Prints the workflow id.",
    )
    create.add_argument("-f", "--file", type=Path, required=True, metavar="FILE")

    run = sub.add_parser(
        "run",
        help="start an execution and print its id",
        parents=[connection, output],
        description="Starts WORKFLOW (an id or an exact name) and prints the execution id. "
        "--file sends the file as {base64, mime, nombre_documento, uuid_proceso}; --input "
        "keys are merged on top.",
        epilog=FOLLOW_EXIT_CODES,
    )
    run.add_argument("workflow", metavar="WORKFLOW")
    run.add_argument("--file", type=Path, metavar="PATH", help="a document to send, base64")
    run.add_argument(
        "--input", metavar="JSON", help="the input document, a JSON object (or @file.json)"
    )
    run.add_argument("--manual", action="store_true", help="wait for `advance` before each step")
    run.add_argument("--watch", action="store_true", help="follow it like `watch` until it ends")
    run.add_argument(
        "--request-id", metavar="ID", help="idempotency key: the same key starts only once"
    )
    run.add_argument(
        "--priority",
        type=int,
        choices=range(1, 6),
        metavar="1-5",
        help="place of its steps in the step queue: 1 first, 5 last (default: 3)",
    )

    executions = sub.add_parser("executions", help="find executions")
    esub = executions.add_subparsers(dest="executions_command", metavar="ACTION", required=True)
    found = esub.add_parser(
        "list",
        help="your executions, newest first: by status, workflow, time and name",
        parents=[connection, output],
    )
    found.add_argument("--status", action="append", choices=STATUSES, default=[])
    found.add_argument("--workflow", default="", metavar="ID_OR_NAME")
    found.add_argument("--since", default="", metavar="AGO_OR_TIME", help="e.g. 1h, 7d, or ISO")
    found.add_argument("--until", default="", metavar="AGO_OR_TIME")
    found.add_argument("--name", default="", help="part of the workflow's name, any case")
    found.add_argument("--limit", type=int, default=20, choices=range(1, 1001), metavar="1-1000")

    scheduling = sub.add_parser("schedules", help="run workflows on cron schedules")
    ssub = scheduling.add_subparsers(dest="schedules_command", metavar="ACTION", required=True)
    listed = ssub.add_parser(
        "list", help="your schedules, oldest first", parents=[connection, output]
    )
    listed.add_argument("--workflow", default="", metavar="ID_OR_NAME", help="only this one's")
    scheduled = ssub.add_parser(
        "create",
        help="start WORKFLOW at every time of a cron expression",
        parents=[connection, output],
        description="Each time of --cron starts one execution of WORKFLOW (an id or an exact "
        "name) with --input, however many engines run; the schedule survives restarts. "
        "Prints the schedule id.",
    )
    scheduled.add_argument("workflow", metavar="WORKFLOW")
    scheduled.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help='five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"',
    )
    scheduled.add_argument(
        "--timezone",
        default="",
        metavar="ZONE",
        help="IANA zone, e.g. Europe/Madrid (default: UTC)",
    )
    scheduled.add_argument(
        "--input", metavar="JSON", help="every run's input, a JSON object (or @file.json)"
    )
    scheduled.add_argument(
        "--overlap",
        choices=OVERLAPS,
        default="",
        help="when the last run still goes on: skip the time (default) or allow a second run",
    )
    scheduled.add_argument(
        "--catchup",
        type=int,
        choices=range(MAX_CATCHUP + 1),
        metavar=f"0-{MAX_CATCHUP}",
        help="times missed while no engine ran that start when one comes back (default: 1)",
    )
    scheduled.add_argument(
        "--priority",
        type=int,
        choices=range(1, 6),
        metavar="1-5",
        help="of the runs it starts, in the step queue: 1 first, 5 last (default: 3)",
    )
    for action, text in (
        ("pause", "start nothing until resumed (the times passed meanwhile are skipped)"),
        ("resume", "run again from the first time after now"),
        ("delete", "delete a schedule (the runs it started are kept)"),
    ):
        changed = ssub.add_parser(action, help=text, parents=[connection, output])
        changed.add_argument("schedule_id", metavar="ID")

    status = sub.add_parser(
        "status", help="status, progress, ETA and step history", parents=[connection, output]
    )
    status.add_argument("execution_id", metavar="ID")

    sub.add_parser(
        "queue",
        help="steps waiting for a runner, by handler, and the runners polling",
        parents=[connection, output],
        description="How many steps wait in the step queue for each handler, for your "
        "tenant and for every tenant together, how long the oldest has waited, and the "
        "runners that polled in the last minutes (their handlers, free slots and last poll).",
    )

    watch = sub.add_parser(
        "watch",
        help="follow an execution live until it ends",
        parents=[connection, output],
        description="Draws a progress bar per step (plain lines when stdout is not a "
        "terminal) and resumes by itself when the stream drops. Without --after-seq it "
        "starts from a snapshot of the status.",
        epilog=FOLLOW_EXIT_CODES,
    )
    watch.add_argument("execution_id", metavar="ID")
    watch.add_argument(
        "--after-seq", type=int, metavar="N", help="replay the events after seq N, then follow"
    )

    cancel = sub.add_parser("cancel", help="cancel an execution", parents=[connection, output])
    cancel.add_argument("execution_id", metavar="ID")
    cancel.add_argument("--reason", default="cancelled from the command line")

    retry = sub.add_parser(
        "retry",
        help="run a failed or cancelled execution again from its failed step",
        description="The same execution goes on (its id, its event log: watchers see it): "
        "the step that failed runs again, or --from-step, with every step after it that "
        "depends on it; the steps before keep their outputs and do not run again.",
        parents=[connection, output],
    )
    retry.add_argument("execution_id", metavar="ID")
    retry.add_argument("--from-step", metavar="NAME", default="", help="the step to run again from")

    revoke = sub.add_parser(
        "revoke",
        help="revoke a token before it expires (admins)",
        description="Every service refuses the token within a few seconds, until it expires. "
        "Give the token itself, or - to read it from stdin (`discovery revoke - < leaked`), or "
        "its id (its jti claim), which is then kept revoked for the longest a token lives.",
        parents=[connection, output],
    )
    revoke.add_argument("token", metavar="TOKEN_OR_ID")

    advance = sub.add_parser(
        "advance", help="let a manual execution run its next step", parents=[connection, output]
    )
    advance.add_argument("execution_id", metavar="ID")
    advance.add_argument(
        "--data", metavar="JSON", help="merged into the context first (a JSON object or @file)"
    )
    return parser


def dispatch(args: argparse.Namespace) -> int:
    engine: str | None = getattr(args, "engine", None)
    timeout: float = getattr(args, "timeout", DEFAULT_TIMEOUT_SECONDS)
    if args.command == "up":
        counts = [f"--{kind}={getattr(args, kind)}" for kind in ("engines", "pioneers", "gateways")]
        commands.up(engine or os.environ.get(ENGINE_ENV) or None, counts)
    if args.command == "pioneer":
        return commands.pioneer(engine, args.steps)
    if args.command == "secrets":
        hosts = tuple(h.strip() for h in args.hosts.split(",") if h.strip())
        return commands.make_secrets(args.directory, hosts)
    if args.command == "token":
        return commands.issue_token(
            role=args.role,
            tenant=args.tenant,
            subject=args.subject or f"{args.role}@{args.tenant}",
            ttl_seconds=args.ttl,
            execution_id=args.execution,
        )
    if timeout <= 0:
        raise UsageError("--timeout: must be more than 0")
    with Client(engine_settings(engine, timeout), options=RETRIED_STARTS) as client:
        json_output: bool = getattr(args, "json", False)
        ctx = commands.Context(client, make_console(), make_console(stderr=True), json_output)
        match args.command:
            case "workflows":
                match args.workflows_command:
                    case "list":
                        return commands.workflows_list(ctx)
                    case "show":
                        return commands.workflows_show(ctx, args.workflow, args.version)
                    case "versions":
                        return commands.workflows_versions(ctx, args.workflow)
                    case _:
                        return commands.workflows_create(ctx, args.file)
            case "run":
                return commands.run(
                    ctx,
                    commands.RunOptions(
                        workflow=args.workflow,
                        file=args.file,
                        input=args.input,
                        manual=args.manual,
                        watch=args.watch,
                        request_id=args.request_id,
                        priority=args.priority,
                    ),
                )
            case "executions":
                return executions_list(
                    ctx,
                    Listing(
                        args.status, args.workflow, args.since, args.until, args.name, args.limit
                    ),
                )
            case "schedules":
                return _schedules(ctx, args)
            case "status":
                return commands.status(ctx, args.execution_id)
            case "queue":
                return commands.queue(ctx)
            case "watch":
                return commands.watch(ctx, args.execution_id, args.after_seq)
            case "cancel":
                return commands.cancel(ctx, args.execution_id, args.reason)
            case "retry":
                return commands.retry(ctx, args.execution_id, args.from_step)
            case "revoke":
                return commands.revoke(ctx, args.token)
            case _:
                return commands.advance(ctx, args.execution_id, args.data)


def _schedules(ctx: commands.Context, args: argparse.Namespace) -> int:
    match args.schedules_command:
        case "list":
            return schedules.schedules_list(ctx, args.workflow)
        case "create":
            return schedules.schedules_create(
                ctx,
                NewSchedule(
                    args.workflow,
                    args.cron,
                    args.timezone,
                    args.input,
                    args.overlap,
                    args.catchup,
                    args.priority,
                ),
            )
        case "pause":
            return schedules.schedules_pause(ctx, args.schedule_id)
        case "resume":
            return schedules.schedules_resume(ctx, args.schedule_id)
        case _:
            return schedules.schedules_delete(ctx, args.schedule_id)


def main(argv: Sequence[str] | None = None) -> int:
    # `kill -USR1 PID` prints where every thread of a stuck command is, on stderr (when
    # stderr is a file: not when a caller captured it in memory).
    with contextlib.suppress(io.UnsupportedOperation, ValueError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    args = build_parser().parse_args(argv)  # exits 2 with the usage on a bad command line
    errors = make_console(stderr=True)
    try:
        return dispatch(args)
    except CliError as exc:
        errors.print(Text(f"discovery: {exc.describe()}"), soft_wrap=True)
        return exc.exit_code
    except EngineError as exc:
        errors.print(Text(f"discovery: {exc.describe()}"), soft_wrap=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `discovery watch ID | head`: the reader left. Point stdout at nothing so that
        # the interpreter's final flush does not complain a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
