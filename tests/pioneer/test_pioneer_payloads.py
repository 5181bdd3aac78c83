"""The seed's bodies checked field by field, and the SDK refused outside a step."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from services.pioneer import sdk
from services.pioneer.payloads import outcome_from_body, progress_from_body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "no percentage"}, "percentage"),
        ({"percentage": "50"}, "percentage"),
        ({"percentage": True}, "percentage"),
        ({"percentage": 100.5}, "percentage"),
        ({"percentage": float("nan")}, "percentage"),
        ({"percentage": 5, "message": 7}, "message"),
        ({"percentage": 5, "current_task": ["a"]}, "current_task"),
        ({"percentage": 5, "estimated_remaining_seconds": -1}, "estimated_remaining_seconds"),
        ({"percentage": 5, "custom_data": "pages=5"}, "custom_data"),
        ({"percentage": 5, "custom_data": {"when": object()}}, "custom_data"),
        ({"percentage": 5, "porcentaje": 5}, "porcentaje"),
        (["percentage", 5], "progress"),
    ],
)
def test_a_bad_progress_body_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        progress_from_body(body)


def test_the_seeds_progress_body_converts_whole() -> None:
    progress = progress_from_body(
        {
            "percentage": 50,
            "message": "Procesando documento...",
            "current_task": "Extrayendo texto",
            "estimated_remaining_seconds": 120,
            "custom_data": {"pages_processed": 5, "total_pages": 10},
        }
    )
    assert progress.percentage == 50
    assert progress.estimated_remaining_seconds == 120
    assert json_format.MessageToDict(progress.custom_data) == {
        "pages_processed": 5,
        "total_pages": 10,
    }


def test_an_unset_eta_stays_unset() -> None:
    assert not progress_from_body({"percentage": 0}).HasField("estimated_remaining_seconds")


def test_a_completion_keeps_success_in_its_result() -> None:
    outcome = outcome_from_body({"success": True, "sections_found": 8})
    assert outcome.success
    assert outcome.error is None
    assert json_format.MessageToDict(outcome.result) == {"success": True, "sections_found": 8}


def test_a_failed_completion_carries_its_error() -> None:
    outcome = outcome_from_body({"success": False, "error": {"type": "Bad", "message": "no"}})
    assert not outcome.success
    assert outcome.error is not None
    assert (outcome.error.reason, outcome.error.type, outcome.error.message) == (
        "step_failed",
        "Bad",
        "no",
    )


@pytest.mark.parametrize("body", [{"sections_found": 8}, {"success": "yes"}])
def test_a_completion_needs_a_boolean_success(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^success:"):
        outcome_from_body(body)


async def test_the_sdk_outside_a_step_raises_not_in_step() -> None:
    with pytest.raises(sdk.NotInStep):
        await sdk.report_progress("e", "fetch_user", {"percentage": 1})
    with pytest.raises(sdk.NotInStep):
        sdk.info()
