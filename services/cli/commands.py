"""One function per command. Each returns the process exit code or raises CliError."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import workflow_pb2 as wf_pb
from rich.console import Console
from rich.text import Text

from discovery_client import TERMINAL_EVENTS, Client, EngineError
from services.auth import WATCHER, TokenAuthority
from services.certs import make_deployment_secrets
from services.cli import render
from services.cli.board import Outcome, event_data, event_name
from services.cli.config import engine_target
from services.cli.documents import file_document, json_object, read_definition
from services.cli.errors import EXIT_EXECUTION_FAILED, EXIT_OK, CliError, Interrupted, UsageError
from services.cli.watch_view import make_view
from services.envconfig import ConfigError
from services.token_keys import SIGNING_KEY_FILE_ENV, AuthKeys, load_signing_key

ROOT = Path(__file__).resolve().parents[2]
# The operator's key `make run` writes (services/stack.py).
LOCAL_OPERATOR_KEY = Path(".discovery/keys/operator.key")


@dataclass(frozen=True)
class Context:
    client: Client
    out: Console
    err: Console
    json: bool = False


# --- workflows ---------------------------------------------------------------------------


def workflows_list(ctx: Context) -> int:
    workflows = all_workflows(ctx.client)
    if ctx.json:
        render.print_json({"workflows": [render.message_json(w) for w in workflows]})
    elif not workflows:
        ctx.err.print("no workflows yet: create one with `discovery workflows create -f FILE`")
    else:
        ctx.out.print(render.workflows_table(workflows))
    return EXIT_OK


def workflows_show(ctx: Context, ref: str, version: int = 0) -> int:
    workflow = resolve_workflow(ctx, ref)
    if version and version != workflow.version:
        workflow = ctx.client.get_workflow(workflow.workflow_id, version=version)
    if ctx.json:
        render.print_json(render.message_json(workflow))
    else:
        render.show_workflow(ctx.out, workflow)
    return EXIT_OK


def workflows_create(ctx: Context, path: Path) -> int:
    """Applies the file: creates the workflow when its name is new, makes a new version of the
    workflow of that name when the file differs from its current version, and nothing when
    they are the same; so the same file applied twice changes nothing."""
    definition = read_definition(path)
    # An empty name lists every workflow: it goes to create, which names what is missing.
    named = all_workflows(ctx.client, name=definition.name) if definition.name else []
    try:
        if named:
            updated = ctx.client.update_workflow(named[0].workflow_id, definition)
            workflow = updated.workflow
            outcome = (
                f"updated workflow {workflow.name!r}: version {workflow.version}"
                if updated.changed
                else f"workflow {workflow.name!r} unchanged (version {workflow.version})"
            )
        else:
            workflow = ctx.client.create_workflow(definition)
            outcome = (
                f"created workflow {workflow.name!r} (version {workflow.version})"
                f" with {render.plural(len(workflow.steps), 'step')}"
            )
    except EngineError as exc:
        if exc.code is grpc.StatusCode.INVALID_ARGUMENT:
            raise CliError(f"{path}: invalid workflow definition: {exc.describe()}") from None
        raise
    if ctx.json:
        render.print_json(render.message_json(workflow))
    else:
        ctx.out.print(workflow.workflow_id, markup=False)
        ctx.err.print(Text(outcome))
    return EXIT_OK


def workflows_versions(ctx: Context, ref: str) -> int:
    """Every version of one workflow, newest first."""
    workflow_id = resolve_workflow(ctx, ref).workflow_id
    versions: list[wf_pb.Workflow] = []
    token = ""
    while True:
        page = ctx.client.workflow_versions(workflow_id, page_size=1000, page_token=token)
        versions.extend(page.versions)
        token = page.next_page_token
        if not token:
            break
    if ctx.json:
        render.print_json({"versions": [render.message_json(v) for v in versions]})
    else:
        ctx.out.print(render.versions_table(versions))
    return EXIT_OK


def resolve_workflow(ctx: Context, ref: str) -> wf_pb.Workflow:
    """An id, or else an exact name; of several workflows with one name, the newest."""
    if _is_uuid(ref):
        try:
            return ctx.client.get_workflow(ref)
        except EngineError as exc:
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                raise
    named = all_workflows(ctx.client, name=ref)
    if not named:
        raise CliError(f"no workflow with the id or name {ref!r} (see `discovery workflows list`)")
    if len(named) > 1:
        newest = named[-1].workflow_id
        ctx.err.print(Text(f"{len(named)} workflows are named {ref!r}; using the newest, {newest}"))
    return named[-1]


def all_workflows(client: Client, name: str = "") -> list[wf_pb.Workflow]:
    """Every page, oldest first."""
    found: list[wf_pb.Workflow] = []
    token = ""
    while True:
        page = client.list_workflows(page_size=1000, page_token=token, name=name)
        found.extend(page.workflows)
        token = page.next_page_token
        if not token:
            return found


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# --- executions --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    workflow: str
    file: Path | None = None
    input: str | None = None
    manual: bool = False
    watch: bool = False
    request_id: str | None = None
    # 1 (first) to 5 (last) in the step queue; None: the engine's default.
    priority: int | None = None


def run(ctx: Context, options: RunOptions) -> int:
    document = {}
    if options.file is not None:
        document.update(file_document(options.file, options.request_id))
    if options.input is not None:
        document.update(json_object(options.input, "--input"))
    if options.request_id is not None and not 0 < len(options.request_id) <= 128:
        raise UsageError("--request-id: 1 to 128 characters")
    if options.priority is not None and not 1 <= options.priority <= 5:
        raise UsageError("--priority: 1 (first) to 5 (last)")
    workflow = resolve_workflow(ctx, options.workflow)
    # Always an idempotency key: a start retried after UNAVAILABLE is then the same start.
    request_id = options.request_id or str(uuid.uuid4())
    execution = ctx.client.start_execution(
        workflow.workflow_id,
        document,
        manual=options.manual,
        request_id=request_id,
        priority=options.priority or 0,
    ).execution
    if ctx.json:
        render.print_json(render.message_json(execution))
    else:
        ctx.out.print(execution.execution_id, markup=False)
        if not options.watch and ctx.err.is_terminal:
            ctx.err.print(f"follow it with: discovery watch {execution.execution_id}", markup=False)
    if options.watch:
        return follow(ctx, execution, after_seq=0)
    return EXIT_OK


def status(ctx: Context, execution_id: str) -> int:
    execution = ctx.client.get_execution(execution_id)
    if ctx.json:
        render.print_json(render.message_json(execution))
    else:
        render.show_status(ctx.out, execution, ctx.client.list_steps(execution_id))
    return EXIT_OK


def watch(ctx: Context, execution_id: str, after_seq: int | None) -> int:
    if after_seq is not None and after_seq < 0:
        raise UsageError("--after-seq: must be 0 or more")
    # Also the check that the engine is there and knows the execution, before any retrying.
    execution = ctx.client.get_execution(execution_id)
    return follow(ctx, execution, after_seq)


def follow(ctx: Context, execution: ex_pb.Execution, after_seq: int | None) -> int:
    """Shows the execution's events until it ends; 0 when it completed, 1 otherwise."""
    execution_id = execution.execution_id
    steps = ctx.client.list_steps(execution_id)
    view = make_view(ctx.json, ctx.out, ctx.err)
    terminal: ex_pb.ExecutionEvent | None = None
    last_seq = after_seq
    try:
        view.begin(execution, steps)
        for item in ctx.client.watch(execution_id, after_seq, on_resume=view.resumed):
            if isinstance(item, ex_pb.Execution):
                last_seq = item.last_seq
                view.snapshot(item)
                continue
            last_seq = item.seq
            view.event(item)
            if item.type in TERMINAL_EVENTS:
                terminal = item
        outcome = _outcome(ctx, execution, terminal)
        view.finish(outcome)
    except KeyboardInterrupt:
        raise Interrupted(execution_id, last_seq) from None
    finally:
        view.close()
    return EXIT_OK if outcome.status == "completed" else EXIT_EXECUTION_FAILED


def _outcome(
    ctx: Context, execution: ex_pb.Execution, terminal: ex_pb.ExecutionEvent | None
) -> Outcome:
    if terminal is None:
        # The execution had ended before the point we resumed from: ask how.
        final = ctx.client.get_execution(execution.execution_id)
        word = render.execution_status(final)
        if word not in ("completed", "failed", "cancelled"):
            raise CliError(f"the engine ended the stream while {execution.execution_id} is {word}")
        error = render.message_json(final.error) if final.HasField("error") else None
        lasted = final.update_time.ToDatetime() - final.create_time.ToDatetime()
        return Outcome(word, error, lasted.total_seconds())
    data = event_data(terminal)
    word = event_name(terminal).removeprefix("workflow_")
    took = (terminal.time.ToDatetime() - execution.create_time.ToDatetime()).total_seconds()
    if word == "cancelled":
        return Outcome(word, {"message": data.get("reason") or "cancelled"}, took)
    return Outcome(word, data.get("error"), took)


def cancel(ctx: Context, execution_id: str, reason: str) -> int:
    execution = ctx.client.cancel(execution_id, reason)
    if ctx.json:
        render.print_json(render.message_json(execution))
    else:
        ctx.out.print(
            Text.assemble(f"{execution_id}: ", render.styled(render.execution_status(execution)))
        )
    return EXIT_OK


def retry(ctx: Context, execution_id: str, from_step: str) -> int:
    # One key per command: a call the client repeats (the engine did not answer) retries
    # the execution once.
    execution = ctx.client.retry(execution_id, from_step=from_step, request_id=str(uuid.uuid4()))
    if ctx.json:
        render.print_json(render.message_json(execution))
    else:
        text = Text.assemble(f"{execution_id}: ", render.styled(render.execution_status(execution)))
        running = ", ".join(step.name for step in execution.running_steps)
        if running:
            text.append(f", running {running}")
        ctx.out.print(text)
    return EXIT_OK


def revoke(ctx: Context, token_or_id: str) -> int:
    if token_or_id == "-":
        token_or_id = sys.stdin.read().strip()
    revoked = ctx.client.revoke_token(token_or_id)
    if ctx.json:
        render.print_json(render.message_json(revoked))
    else:
        until = revoked.expires_at.ToDatetime().isoformat(timespec="seconds")
        ctx.out.print(f"token {revoked.token_id} revoked (kept so until {until}Z)")
    return EXIT_OK


def advance(ctx: Context, execution_id: str, data: str | None) -> int:
    merged = json_object(data, "--data") if data is not None else {}
    execution = ctx.client.advance(execution_id, merged)
    if ctx.json:
        render.print_json(render.message_json(execution))
    else:
        text = Text.assemble(f"{execution_id}: ", render.styled(render.execution_status(execution)))
        if execution.HasField("current_step"):
            step = execution.current_step
            text.append(f", step {step.order} of {execution.progress.total_steps}: {step.name}")
        ctx.out.print(text)
    return EXIT_OK


# --- the step queue ----------------------------------------------------------------------


def queue(ctx: Context) -> int:
    answer = ctx.client.get_step_queue()
    if ctx.json:
        render.print_json(render.message_json(answer))
    else:
        render.show_queue(ctx.out, answer)
    return EXIT_OK


# --- the stack ---------------------------------------------------------------------------


def issue_token(
    *, role: str, tenant: str, subject: str, ttl_seconds: float, execution_id: str | None
) -> int:
    """Signs a token with the operator's key and prints it (nothing else: pipeable)."""
    if ttl_seconds <= 0:
        raise UsageError("--ttl: must be more than 0")
    if (role == WATCHER) != (execution_id is not None):
        raise UsageError("--execution goes with --role watcher, and only with it")
    named = os.environ.get(SIGNING_KEY_FILE_ENV, "").strip()
    path = Path(named) if named else Path.cwd() / LOCAL_OPERATOR_KEY
    if not named and not path.is_file():
        raise UsageError(
            f"no signing key: set {SIGNING_KEY_FILE_ENV} to the operator's key (or run"
            " `make run` here first)"
        )
    try:
        authority = TokenAuthority(AuthKeys((), load_signing_key(path)))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        token = authority.mint(
            subject=subject,
            role=role,
            tenant=tenant,
            ttl_seconds=ttl_seconds,
            execution_id=execution_id,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    return 0


def pioneer(engine: str | None, step_modules: Sequence[str]) -> int:
    """Runs pioneer in this process with `step_modules` imported besides the built-in steps
    (and those of PIONEER_STEP_MODULES); `engine`, when given, is where it pulls from."""
    from services.pioneer import __main__ as runner  # the runner's imports, only for it

    given = os.environ.get("PIONEER_STEP_MODULES", "")
    os.environ["PIONEER_STEP_MODULES"] = ",".join(filter(None, [given, *step_modules]))
    named = engine is not None or not any(
        os.environ.get(name, "").strip() for name in ("ENGINE_URL", "DISCOVERY_URL")
    )
    if named:
        # --engine, else DISCOVERY_ENGINE as for every other command, else localhost:50051
        os.environ["ENGINE_URL"] = engine_target(engine)
    return runner.main()


def make_secrets(directory: Path, hosts: tuple[str, ...]) -> int:
    if not hosts:
        raise UsageError("--hosts: at least one name")
    try:
        written = make_deployment_secrets(directory, hosts)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for path in written:
        print(path)
    if not written:
        print(f"{directory}: everything is there already; nothing written", file=sys.stderr)
    return 0


def up(engine: str | None, counts: Sequence[str] = ()) -> NoReturn:
    """`make run` without make: replaces this process with `python -m services.stack`, given
    `counts` (`--engines N`…) as they came."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "generated"), *filter(None, [env.get("PYTHONPATH")])]
    )
    if engine is not None:
        # The (first) engine listens where the CLI would look for it.
        env.setdefault("ENGINE_PORT", engine.split(",")[0].rpartition(":")[2])
    argv = [sys.executable, "-m", "services.stack", *counts]
    try:
        os.chdir(ROOT)
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        raise CliError(f"cannot start the stack: {exc}") from None
