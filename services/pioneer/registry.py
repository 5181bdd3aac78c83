"""Step handlers by name: what StartStep can run and what ListHandlers shows.

A handler is a plain `async def handler(ctx) -> dict | None`; it is registered with
`@step("name")` on the default registry, or on a registry of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.pioneer.context import StepContext

StepHandler = Callable[[StepContext], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    function: StepHandler
    description: str
    input_keys: tuple[str, ...]


class StepRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}

    def step(
        self, name: str, *, description: str = "", input_keys: Iterable[str] = ()
    ) -> Callable[[StepHandler], StepHandler]:
        """Registers the decorated handler under `name`; the handler itself is returned as is."""
        if not name:
            raise ValueError("a step handler needs a name")

        def register(function: StepHandler) -> StepHandler:
            if name in self._handlers:
                raise ValueError(f"a step handler named {name!r} is already registered")
            self._handlers[name] = HandlerSpec(
                name=name,
                function=function,
                description=description or (function.__doc__ or "").strip().split("\n")[0],
                input_keys=tuple(input_keys),
            )
            return function

        return register

    def get(self, name: str) -> HandlerSpec | None:
        return self._handlers.get(name)

    def handlers(self) -> list[HandlerSpec]:
        return sorted(self._handlers.values(), key=lambda spec: spec.name)

    def copy(self) -> StepRegistry:
        """A registry with the same handlers, to add more without touching this one."""
        clone = StepRegistry()
        clone._handlers = dict(self._handlers)
        return clone


registry = StepRegistry()
step = registry.step
