"""One step: counts the words of `text`, reporting its progress as it goes.

Importing this module registers the handler `count_words` with pioneer (the `@step`
decorator); `discovery pioneer --steps custom_steps.steps` imports it at start.
"""

from __future__ import annotations

from typing import Any

from services.pioneer.sdk import StepContext, StepFailure, step

CHUNK_WORDS = 1000


@step("count_words", description="Counts the words of `text`.", input_keys=("text",))
async def count_words(ctx: StepContext) -> dict[str, Any]:
    text = ctx.input.get("text")
    if not isinstance(text, str):
        raise StepFailure("count_words needs `text`, a string")
    words = text.split()
    for done in range(0, len(words), CHUNK_WORDS):
        await ctx.report_progress(
            {
                "percentage": 100.0 * done / max(len(words), 1),
                "message": f"counted {done} of {len(words)} words",
                "current_task": "Counting words",
            }
        )
    longest = max(words, key=len) if words else ""
    return {"words": len(words), "longest_word": longest}
