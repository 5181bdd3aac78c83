"""A user's own step module, as PIONEER_STEP_MODULES names it: importing it registers
`user_hello` on the default registry (only in the pioneer child of the test that names it)."""

from __future__ import annotations

from services.pioneer.context import StepContext
from services.pioneer.sdk import step


@step("user_hello", description="Greets the input's `name`.", input_keys=("name",))
async def user_hello(ctx: StepContext) -> dict[str, str]:
    return {"greeting": f"hello {ctx.input.get('name', 'world')}"}
