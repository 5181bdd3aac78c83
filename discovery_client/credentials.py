"""Who a caller is to the engine: the `authorization` metadata every call carries."""

from __future__ import annotations

from typing import Protocol


class Credentials(Protocol):
    """Where a client's `authorization` metadata comes from (a token minted anew before it
    expires is one: services/auth.ServiceToken)."""

    def metadata(self) -> tuple[tuple[str, str], ...]: ...


class BearerToken:
    """A token given from outside (an API key, a watch token)."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class Anonymous:
    """No credentials: the health check, or a caller whose calls each get theirs
    (`with_credentials`)."""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ()
