"""The store's boundary: what the database driver raises stays inside the store.

Every public coroutine of a store class raises domain errors only (repository.py): a
PyMongoError becomes StoreUnavailable, naming the driver's error class but not its text
(hosts, addresses), which stays in the exception's cause for the log. Above the store no
module imports the driver (tests/engine/test_domain.py keeps it so).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import PyMongoError

from services.engine.domain.errors import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def unavailable(error: PyMongoError) -> StoreUnavailable:
    return StoreUnavailable(f"the database is unavailable ({type(error).__name__}); retry")


def domain_errors(cls: C) -> C:
    """Wraps every public coroutine method of `cls` (see the module's docstring)."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translated(member))
    return cls


def _translated(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    return call
