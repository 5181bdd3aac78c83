"""Builds the engine's grpc.aio server: its services, health, reflection, limits."""

from __future__ import annotations

import grpc
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import schedule_service_pb2 as ss
from discovery.engine.v1 import schedule_service_pb2_grpc as ss_grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services import tracing
from services.auth import TokenAuthority
from services.engine.quotas import CallQuotas
from services.engine.revocations import Revocations
from services.engine.rpc.auth import PERMISSIONS
from services.engine.rpc.call_quotas import CallQuotaInterceptor
from services.engine.rpc.errors import DOMAIN, ErrorInterceptor
from services.engine.rpc.executions import ExecutionServicer
from services.engine.rpc.forward import Forwarder, ForwardInterceptor
from services.engine.rpc.log_context import LogContextInterceptor
from services.engine.rpc.schedules import ScheduleServicer
from services.engine.rpc.servicer import Limits
from services.engine.rpc.step_queue import StepQueueServicer
from services.engine.rpc.step_reports import StepReportServicer
from services.engine.rpc.tokens import TokenServicer
from services.engine.rpc.workflows import WorkflowServicer
from services.engine.runner import Runner
from services.engine.schedules import Schedules
from services.grpc_auth import AuthInterceptor

SERVICE_NAMES = (
    ws.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
    es.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    sr.DESCRIPTOR.services_by_name["StepReportService"].full_name,
    sq.DESCRIPTOR.services_by_name["StepQueueService"].full_name,
    ts.DESCRIPTOR.services_by_name["TokenService"].full_name,
    ss.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
)

# Keepalive that lets long WatchExecution streams survive idle proxies without provoking
# "too_many_pings" from clients that ping every 20 s.
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def build_server(
    runner: Runner,
    authority: TokenAuthority,
    limits: Limits,
    quotas: CallQuotas,
    revocations: Revocations,
    forwarder: Forwarder,
    schedules: Schedules,
    *,
    max_message_bytes: int,
    max_concurrent_rpcs: int,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    server = grpc.aio.server(
        interceptors=[
            # Outermost: the call's span, child of the caller's traceparent (none while
            # tracing is off), and what its lines are about, for everything inside.
            *tracing.grpc_server_interceptors("engine"),
            LogContextInterceptor(),
            ErrorInterceptor(on_error=runner.metrics.error),
            AuthInterceptor(authority, PERMISSIONS, domain=DOMAIN),
            # After auth: it counts verified principals only.
            CallQuotaInterceptor(authority, quotas),
            # Innermost: what it forwards was authenticated and counted here too.
            ForwardInterceptor(forwarder),
        ],
        # The last resort above the quotas' pools (config.py keeps it above their sum).
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *_KEEPALIVE,
        ],
    )
    ws_grpc.add_WorkflowServiceServicer_to_server(
        WorkflowServicer(runner, authority, limits), server
    )
    es_grpc.add_ExecutionServiceServicer_to_server(
        ExecutionServicer(runner, authority, limits), server
    )
    sr_grpc.add_StepReportServiceServicer_to_server(
        StepReportServicer(runner, authority, limits), server
    )
    sq_grpc.add_StepQueueServiceServicer_to_server(
        StepQueueServicer(runner, authority, limits), server
    )
    ts_grpc.add_TokenServiceServicer_to_server(TokenServicer(authority, revocations), server)
    ss_grpc.add_ScheduleServiceServicer_to_server(ScheduleServicer(schedules, authority), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return server, health_servicer
