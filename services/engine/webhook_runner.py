"""Pushes step attempts to HTTP step runners as webhooks (README, "HTTP runners: push").

A webhook runner is a runner on the engine's own step queue: the pusher takes attempts with
`Dispatch.poll`, in this process, under the runner_id `webhook:<url>`, for the handlers the
runner lists and no more than its free slots, so queue fairness, priorities, the queue
listing and `CreateWorkflow`'s handler check see it like any runner that polls. The take is
logged before the POST (as for a gRPC poll): an attempt is handed to one runner at a time,
and delivery is at least once (the runner keeps the attempt token of what it has accepted
and answers a repeated POST of it with 202 again).

The contract the runner speaks, and the JSON it is sent, are in
`services/engine/webhook_contract.py`; this module is the pusher.

Delivery never fails work because the runner is away: while its handler list cannot be read
nothing is taken (the work waits in the queue), and a POST that fails for a reason that may
pass (no connection, a timeout, 408, 429, 5xx) is sent again with backoff while the attempt
lives. A runner that refuses an attempt for good (another 4xx) fails it, with the status and
the start of its answer as the reason, so that the step's retry policy decides and the run's
history says why; leaving it would hold a slot until the heartbeat timeout and hide the cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

import aiohttp

from services import jsonlog, tracing
from services.engine.dispatch import Assignment
from services.engine.domain.errors import DiscoveryError
from services.engine.runner import Runner
from services.engine.webhook_contract import (
    CONTRACT_VERSION,
    Offer,
    RunnerUnavailable,
    attempt_json,
    parse_offer,
)

log = logging.getLogger(__name__)

# Every call to a runner has a deadline: connecting, and the whole exchange.
CONNECT_TIMEOUT_SECONDS = 5.0
CALL_TIMEOUT_SECONDS = 10.0
# The most of a runner's answer that is read: its handler list, or a refusal's text.
MAX_HANDLERS_BYTES = 64 * 1024
MAX_REFUSAL_BYTES = 512
# How often the handler list is read again while the runner answers.
REFRESH_SECONDS = 30.0
# The longest one in-process poll waits: a runner found away (a POST that could not connect)
# stops taking within this long.
POLL_WAIT_SECONDS = 1.0
# Backoff between tries: of the handler list while the runner is away, of a POST that failed.
INITIAL_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 10.0
# An attempt whose end this engine never sees (its execution moved to another engine) stops
# counting against the runner's slots this long after its own timeout.
IN_FLIGHT_SLACK_SECONDS = 5.0
# Tokens of attempts that ended before their take reached the pusher (a cancel in between).
RECENTLY_ENDED = 1000
# Statuses that may pass: the same POST is sent again.
TRANSIENT_STATUSES = frozenset({408, 429})


class WebhookRunner:
    """Takes attempts from the engine's step queue for one HTTP runner and POSTs them to it."""

    def __init__(
        self,
        runner: Runner,
        url: str,
        report_base_url: str,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.runner_id = f"webhook:{self.url}"
        self._runner = runner
        self._report_base_url = report_base_url
        self._refresh_seconds = refresh_seconds
        self.offer: Offer | None = None
        # attempt token -> (the attempt, when it stops counting whatever happens)
        self._in_flight: dict[str, tuple[Assignment, datetime]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=CALL_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
            ),
            raise_for_status=False,
            # A POST of an attempt carries the attempt's span in its traceparent header.
            trace_configs=tracing.aiohttp_trace_configs("engine"),
        )
        self._runner.dispatch.on_attempt_end(self.runner_id, self._attempt_ended)
        # Attempts it took before the engine restarted still run there (or were never
        # delivered, if the engine stopped between the take and the POST): they count, and
        # are sent again, which a runner that keeps the tokens it accepted answers with 202.
        for assignment in self._runner.dispatch.running_attempts(self.runner_id):
            self._track(assignment)
        self._task = asyncio.create_task(self._keep_taking(), name=f"webhook {self.url}")

    async def stop(self) -> None:
        self._runner.dispatch.on_attempt_end(self.runner_id, None)
        tasks = [*self._deliveries, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # --- what the runner serves --------------------------------------------------------

    async def read_offer(self) -> Offer:
        assert self._session is not None
        url = f"{self.url}/{CONTRACT_VERSION}/handlers"
        try:
            # Read every few seconds: nobody's trace.
            with tracing.untraced():
                async with self._session.get(url) as response:
                    if response.status != 200:
                        raise RunnerUnavailable(f"GET /v1/handlers answered HTTP {response.status}")
                    body = await _read_at_most(response, MAX_HANDLERS_BYTES)
            if body is None:
                raise RunnerUnavailable(
                    f"GET /v1/handlers answered more than {MAX_HANDLERS_BYTES} bytes"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RunnerUnavailable(f"GET /v1/handlers: {exc!r}") from None
        try:
            value = json.loads(body)
        except ValueError:
            raise RunnerUnavailable("GET /v1/handlers did not answer JSON") from None
        return parse_offer(value)

    async def _wait_for_offer(self) -> Offer:
        """The runner's handler list, asked again with backoff until it answers: meanwhile
        nothing is taken and the work waits in the queue."""
        delay = INITIAL_BACKOFF_SECONDS
        while True:
            try:
                offer = await self.read_offer()
            except RunnerUnavailable as exc:
                log.warning(
                    "webhook runner unavailable; taking nothing for it",
                    extra={"runner": self.runner_id, "error": str(exc)},
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            if offer != self.offer:
                log.info(
                    "webhook runner offers handlers",
                    extra={
                        "runner": self.runner_id,
                        "handlers": sorted(offer.handlers),
                        "max_concurrent": offer.max_concurrent,
                    },
                )
            self.offer = offer
            return offer

    # --- taking ---------------------------------------------------------------------------

    async def _keep_taking(self) -> None:
        """The take loop, started again after anything unexpected: a pusher that died
        quietly would leave its handlers' work waiting for ever."""
        while True:
            try:
                await self._take_loop()
                return
            except Exception:  # anything: logged with its traceback, and the loop goes on
                log.exception(
                    "webhook pusher failed; starting it again", extra={"runner": self.runner_id}
                )
                self.offer = None
                await asyncio.sleep(1.0)

    async def _take_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            offer = self.offer or await self._wait_for_offer()
            refresh_at = loop.time() + self._refresh_seconds
            while self.offer is offer and loop.time() < refresh_at:
                if self._runner.queue.closed:
                    return
                self._expire(datetime.now(UTC))
                free = offer.max_concurrent - len(self._in_flight)
                remaining = refresh_at - loop.time()
                if free <= 0:
                    await self._runner.dispatch.offer(self.runner_id, offer.handlers, 0)
                    self._changed.clear()
                    try:
                        async with asyncio.timeout(min(remaining, 1.0)):
                            await self._changed.wait()
                    except TimeoutError:
                        pass
                    continue
                try:
                    taken = await self._runner.dispatch.poll(
                        self.runner_id, offer.handlers, free, min(remaining, POLL_WAIT_SECONDS)
                    )
                except DiscoveryError as exc:
                    log.warning("webhook poll failed: %s", exc, extra={"runner": self.runner_id})
                    await asyncio.sleep(1.0)
                    continue
                for assignment in taken:
                    self._track(assignment)
            if self.offer is offer:
                # Time to read the list again; a runner that does not answer now is away.
                self.offer = None

    def _track(self, assignment: Assignment) -> None:
        token = assignment.attempt_token
        if token in self._ended:
            return  # it ended (cancelled) before its take reached here: nothing to send
        expires = assignment.started_at + timedelta(
            seconds=assignment.timeout_seconds + IN_FLIGHT_SLACK_SECONDS
        )
        self._in_flight[token] = (assignment, expires)
        task = asyncio.create_task(self._deliver_logged(assignment))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def _attempt_ended(self, token: str) -> None:
        if self._in_flight.pop(token, None) is None:
            self._ended[token] = None
            while len(self._ended) > RECENTLY_ENDED:
                self._ended.popitem(last=False)
        self._changed.set()

    def _expire(self, now: datetime) -> None:
        for token, (_, expires) in list(self._in_flight.items()):
            if now >= expires:
                del self._in_flight[token]

    # --- delivery ---------------------------------------------------------------------------

    async def _deliver_logged(self, assignment: Assignment) -> None:
        # A task of its own, for this attempt: its lines and its POST are the attempt's.
        jsonlog.bind(assignment.execution_id, tracing.trace_id(assignment.traceparent))
        with tracing.attached(assignment.traceparent):
            try:
                await self._deliver(assignment)
            except Exception:  # anything: the attempt's heartbeat timeout ends it
                log.exception(
                    "webhook delivery failed",
                    extra={"runner": self.runner_id, "execution_id": assignment.execution_id},
                )

    async def _deliver(self, assignment: Assignment) -> None:
        assert self._session is not None
        token = assignment.attempt_token
        context = {
            "runner": self.runner_id,
            "execution_id": assignment.execution_id,
            "step": assignment.step_name,
            "attempt": assignment.attempt,
        }
        try:
            body = json.dumps(attempt_json(assignment, self._report_base_url))
        except (TypeError, ValueError) as exc:
            await self._fail(assignment, "attempt_not_sent", f"the attempt is not JSON: {exc}")
            return
        delay = INITIAL_BACKOFF_SECONDS
        while token in self._in_flight:
            retry_after = 0.0
            try:
                async with self._session.post(
                    f"{self.url}/{CONTRACT_VERSION}/attempts",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    if 200 <= response.status < 300:
                        log.debug("attempt delivered", extra=context)
                        return
                    excerpt = await response.content.read(MAX_REFUSAL_BYTES)
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                if status in TRANSIENT_STATUSES or status >= 500:
                    log.warning("webhook POST answered %s; sending again", status, extra=context)
                else:
                    await self._refused(assignment, status, excerpt.decode(errors="replace"))
                    return
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The runner may be gone: take no more until its handler list answers again.
                self.offer = None
                log.warning("webhook POST failed (%r); sending again", exc, extra=context)
            await asyncio.sleep(max(delay * random.uniform(0.8, 1.2), retry_after))
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    async def _refused(self, assignment: Assignment, status: int, text: str) -> None:
        message = f"the runner at {self.url} refused the attempt: HTTP {status}"
        if text.strip():
            message += f": {text.strip()[:MAX_REFUSAL_BYTES]}"
        log.warning(
            message,
            extra={"runner": self.runner_id, "execution_id": assignment.execution_id},
        )
        if status in (404, 409, 422):
            self.offer = None  # it may no longer serve this handler: read its list again
        await self._fail(assignment, "runner_refused", message, f"HTTP {status}")

    async def _fail(
        self, assignment: Assignment, reason: str, message: str, kind: str = ""
    ) -> None:
        """Fails the attempt as a step that failed: the step's retry policy decides."""
        try:
            await self._runner.reports.complete_step(
                assignment.execution_id,
                assignment.step_name,
                assignment.attempt_token,
                False,
                {},
                {"reason": reason, "type": kind, "message": message},
            )
        except DiscoveryError as exc:
            # It ended meanwhile (cancelled, timed out), or the database is away: its
            # heartbeat timeout ends it then.
            log.info("attempt not failed: %s", exc, extra={"runner": self.runner_id})


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    if (response.content_length or 0) > limit:
        return None
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _retry_after(value: str | None) -> float:
    """A `Retry-After` in seconds, bounded; the HTTP-date form is not worth trusting here."""
    try:
        return min(max(float(value or 0), 0.0), MAX_BACKOFF_SECONDS * 3)
    except ValueError:
        return 0.0
