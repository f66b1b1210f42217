"""The AdminService servicer: tokens, budgets and spend, behind the master key."""

import asyncio
import hmac
import os
import secrets
from pathlib import Path

import grpc

from chittycan.v1 import admin_pb2, admin_pb2_grpc
from engine import errors
from engine.auth import bearer_token
from engine.budgets import Budgets
from engine.config import MASTER_KEY_FILE
from engine.errors import GatewayError
from engine.service import abort, internal_error
from engine.tokens import TokenStore


def master_key(configured: str, data_dir: Path) -> str:
    """The configured master key, or one generated once into `<data_dir>/master.key` (readable by its owner only)."""
    if configured:
        return configured
    path = data_dir / MASTER_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = "chittycan_master_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def check_master_key(context: grpc.aio.ServicerContext, key: bytes, what: str) -> None:  # type: ignore[type-arg]
    """Raise UNAUTHENTICATED unless the call's `authorization` metadata is `Bearer <master key>`."""
    metadata = dict(context.invocation_metadata() or ())
    given = bearer_token(str(metadata.get("authorization", ""))) or ""
    if not hmac.compare_digest(given.encode(), key):
        raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, errors.INVALID_API_KEY, f"{what} need the master key.")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """chittycan.v1.AdminService; every call checks the master key first."""

    def __init__(self, tokens: TokenStore, budgets: Budgets, key: str) -> None:
        self._tokens = tokens
        self._budgets = budgets
        self._key = key.encode()

    async def _run(self, context: grpc.aio.ServicerContext, fn, *args):  # type: ignore[no-untyped-def, type-arg]
        try:
            check_master_key(context, self._key, "Admin calls")
            return await asyncio.to_thread(fn, *args)
        except GatewayError as err:
            await abort(context, err)
        except Exception:  # noqa: BLE001 - a bug must still end as a clean INTERNAL status
            await abort(context, internal_error("admin"))

    async def CreateToken(
        self,
        request: admin_pb2.CreateTokenRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> admin_pb2.CreateTokenResponse:
        def create() -> admin_pb2.CreateTokenResponse:
            token, secret = self._tokens.create(
                tenant=request.tenant, scopes=list(request.scopes), name=request.name, ttl_seconds=request.ttl_seconds
            )
            if request.HasField("monthly_budget_micros"):
                self._budgets.set_budget(token.tenant, request.monthly_budget_micros)
            return admin_pb2.CreateTokenResponse(token=token, secret=secret)

        return await self._run(context, create)  # type: ignore[no-any-return]

    async def ListTokens(
        self,
        request: admin_pb2.ListTokensRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> admin_pb2.ListTokensResponse:
        return await self._run(  # type: ignore[no-any-return]
            context, lambda: admin_pb2.ListTokensResponse(tokens=self._tokens.list(request.tenant))
        )

    async def RevokeToken(
        self,
        request: admin_pb2.RevokeTokenRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> admin_pb2.RevokeTokenResponse:
        return await self._run(  # type: ignore[no-any-return]
            context, lambda: admin_pb2.RevokeTokenResponse(token=self._tokens.revoke(request.id))
        )

    async def SetBudget(
        self,
        request: admin_pb2.SetBudgetRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> admin_pb2.SetBudgetResponse:
        def set_budget() -> admin_pb2.SetBudgetResponse:
            if not request.tenant:
                raise errors.invalid_request("A tenant is required.", "tenant")
            self._budgets.set_budget(request.tenant, request.monthly_budget_micros)
            return admin_pb2.SetBudgetResponse(spend=self._budgets.spend(request.tenant))

        return await self._run(context, set_budget)  # type: ignore[no-any-return]

    async def GetSpend(
        self,
        request: admin_pb2.GetSpendRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> admin_pb2.GetSpendResponse:
        return await self._run(  # type: ignore[no-any-return]
            context, lambda: admin_pb2.GetSpendResponse(spend=self._budgets.spend(request.tenant, request.month))
        )
