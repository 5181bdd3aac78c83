"""TokenService: revoking tokens before they expire (services/engine/revocations.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc

from services.auth import AuthError, PermissionDenied, TokenAuthority
from services.engine.domain.errors import InvalidArgument
from services.engine.revocations import Revocations
from services.engine.rpc import convert
from services.grpc_auth import principal

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
MAX_TOKEN_CHARS = 8192


class TokenServicer(ts_grpc.TokenServiceServicer):
    def __init__(self, authority: TokenAuthority, revocations: Revocations) -> None:
        self._authority = authority
        self._revocations = revocations

    async def RevokeToken(
        self, request: ts.RevokeTokenRequest, context: Context
    ) -> ts.RevokeTokenResponse:
        caller = principal(context, self._authority)
        expires_at: datetime | None = None
        if request.token:
            if len(request.token) > MAX_TOKEN_CHARS:
                raise InvalidArgument("token", f"at most {MAX_TOKEN_CHARS} characters")
            try:
                named = self._authority.identify(request.token)
            except AuthError as exc:
                raise InvalidArgument("token", exc.message) from None
            if named.tenant != caller.tenant:
                # Runner tokens of every tenant ("*") included: revoke those by their id.
                raise PermissionDenied(
                    f"the token is tenant {named.tenant!r}'s; an admin of {caller.tenant!r}"
                    " may revoke it by its token_id only"
                )
            token_id = named.token_id
            expires_at = datetime.fromtimestamp(named.expires_at, UTC)
        elif request.token_id:
            if len(request.token_id) > 200:
                raise InvalidArgument("token_id", "at most 200 characters")
            token_id = request.token_id
            if request.HasField("expires_at"):
                expires_at = request.expires_at.ToDatetime(tzinfo=UTC)
        else:
            raise InvalidArgument("token", "give the token, or its token_id (its jti claim)")
        revoked = await self._revocations.revoke(
            token_id, expires_at, f"{caller.subject}@{caller.tenant}"
        )
        return ts.RevokeTokenResponse(
            token_id=revoked.token_id, expires_at=convert.timestamp(revoked.expires_at)
        )

    async def ListRevokedTokens(
        self, request: ts.ListRevokedTokensRequest, context: Context
    ) -> ts.ListRevokedTokensResponse:
        return ts.ListRevokedTokensResponse(token_ids=self._revocations.ids())
