"""Workflow definitions in the legacy JSON shape (CONTRACT.md): `POST /workflows`,
`GET /workflows` and `GET /workflows/{id}`, and their versions (`PUT /workflows/{id}`,
`GET /workflows/{id}/versions`).
"""

from __future__ import annotations

from typing import Any

from discovery.engine.v1 import workflow_pb2 as wf_pb

from services.gateway.legacy_values import iso, plain_struct


def workflow(message: wf_pb.Workflow) -> dict[str, Any]:
    return {
        "workflow_id": message.workflow_id,
        "name": message.name,
        "description": message.description,
        "created_at": iso(message.create_time),
        # 1 when created, one more at each PUT that changed it; updated_at: when this version
        # was made.
        "version": message.version,
        "updated_at": iso(message.update_time),
        "steps": [
            {
                "id": step.step_id,
                "name": step.name,
                "handler": step.handler,
                "timeout_seconds": step.timeout_seconds,
                "heartbeat_timeout_seconds": step.heartbeat_timeout_seconds,
                # 0: an attempt waits in the step queue as long as it takes.
                "schedule_to_start_timeout_seconds": step.schedule_to_start_timeout_seconds,
                # The steps it waits for; [] in a workflow whose steps run in order.
                "after": list(step.after),
                "retry": {
                    "max_attempts": step.retry.max_attempts,
                    "initial_backoff_seconds": step.retry.initial_backoff_seconds,
                    "backoff_multiplier": step.retry.backoff_multiplier,
                    "max_backoff_seconds": step.retry.max_backoff_seconds,
                },
            }
            for step in message.steps
        ],
        "max_parallel_steps": message.max_parallel_steps,
        # What every execution's input must match (JSON Schema); null: any input.
        "input_schema": (
            plain_struct(message.input_schema) if message.HasField("input_schema") else None
        ),
    }
