"""Async client for the engine's AdminService (tokens, budgets, spend); needs the master key."""

from pathlib import Path

import grpc

from chittycan.v1 import admin_pb2, admin_pb2_grpc
from clients.errors import error_from_aio
from clients.gateway import CHANNEL_OPTIONS, call_metadata
from engine.config import MASTER_KEY_FILE


def read_master_key(configured: str, data_dir: Path) -> str | None:
    """CHITTYCAN_MASTER_KEY (or the config's), else the key the engine generated under its data directory."""
    if configured:
        return configured
    path = data_dir / MASTER_KEY_FILE
    return path.read_text().strip() if path.exists() else None


def no_master_key(data_dir: Path) -> str:
    """What `can` says when `read_master_key` found none."""
    return (
        "can: no master key. Set CHITTYCAN_MASTER_KEY, or run this where the engine's data directory "
        f"({data_dir}) is, after the engine has started once."
    )


class AdminClient:
    """AdminService over one channel."""

    def __init__(self, target: str, master_key: str) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._metadata = call_metadata(master_key, None)

    async def __aenter__(self) -> "AdminClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def create_token(self, request: admin_pb2.CreateTokenRequest) -> admin_pb2.CreateTokenResponse:
        """A new token; its secret is in the response and nowhere else."""
        try:
            return await self._stub.CreateToken(request, metadata=self._metadata, timeout=10)
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def list_tokens(self, tenant: str = "") -> admin_pb2.ListTokensResponse:
        """Tokens, newest first."""
        try:
            return await self._stub.ListTokens(
                admin_pb2.ListTokensRequest(tenant=tenant), metadata=self._metadata, timeout=10
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def revoke_token(self, token_id: str) -> admin_pb2.RevokeTokenResponse:
        """Revoke a token by id."""
        try:
            return await self._stub.RevokeToken(
                admin_pb2.RevokeTokenRequest(id=token_id), metadata=self._metadata, timeout=10
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def set_budget(self, tenant: str, micros: int) -> admin_pb2.SetBudgetResponse:
        """Set a tenant's monthly budget (0 removes it)."""
        try:
            return await self._stub.SetBudget(
                admin_pb2.SetBudgetRequest(tenant=tenant, monthly_budget_micros=micros),
                metadata=self._metadata,
                timeout=10,
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def get_spend(self, tenant: str, month: str = "") -> admin_pb2.GetSpendResponse:
        """A tenant's spend and budget."""
        try:
            return await self._stub.GetSpend(
                admin_pb2.GetSpendRequest(tenant=tenant, month=month), metadata=self._metadata, timeout=10
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None
