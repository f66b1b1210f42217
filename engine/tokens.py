"""Gateway tokens (`chitty_...`): random secrets handed out once, stored only as SHA-256 hashes in LMDB."""

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from chittycan.v1 import admin_pb2
from engine import errors
from engine.errors import GatewayError
from engine.store import Store

TOKEN_PREFIX = "chitty_"
SCOPES = frozenset({"ai:read", "ai:write"})


def token_hash(secret: str) -> bytes:
    """The storage key of a token. A fast hash is right here: the secrets are 256-bit random, not passwords."""
    return hashlib.sha256(secret.encode()).digest()


class TokenStore:
    """Creates, finds, lists and revokes tokens. Every lookup reads LMDB, so a revocation made by any engine
    process takes effect on the next request everywhere."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._env = store.env
        self._by_hash = store.db("tokens")
        self._ids = store.db("token_ids")
        self._clock = clock

    def create(self, *, tenant: str, scopes: list[str], name: str, ttl_seconds: int) -> tuple[admin_pb2.Token, str]:
        """A new token and its secret (blocking LMDB write: call from a thread)."""
        unknown = set(scopes) - SCOPES
        if unknown:
            raise errors.invalid_request(f"Unknown scopes {sorted(unknown)}; known: {sorted(SCOPES)}.", "scopes")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = "tok_" + secrets.token_hex(8)
        token = admin_pb2.Token(
            id=token_id,
            tenant=tenant or token_id,
            scopes=sorted(set(scopes or SCOPES)),
            name=name,
            created=_timestamp(self._clock()),
            prefix=secret[: len(TOKEN_PREFIX) + 4],
        )
        if ttl_seconds > 0:
            token.expires.CopyFrom(_timestamp(self._clock() + ttl_seconds))
        digest = token_hash(secret)
        with self._env.begin(write=True) as txn:
            txn.put(digest, token.SerializeToString(), db=self._by_hash)
            txn.put(token_id.encode(), digest, db=self._ids)
        return token, secret

    def lookup(self, secret: str) -> admin_pb2.Token:
        """The live token for `secret`; raises UNAUTHENTICATED when unknown, revoked or expired."""
        with self._env.begin(db=self._by_hash) as txn:
            raw = txn.get(token_hash(secret))
        if raw is None:
            raise _invalid("Incorrect API key provided: the gateway token is unknown.")
        token = admin_pb2.Token.FromString(raw)
        if token.revoked:
            raise _invalid("The gateway token has been revoked.")
        if token.HasField("expires") and token.expires.seconds <= self._clock():
            raise _invalid("The gateway token has expired.")
        return token

    def list(self, tenant: str = "") -> list[admin_pb2.Token]:
        """Every token (of `tenant`), newest first."""
        with self._env.begin(db=self._by_hash) as txn:
            tokens = [admin_pb2.Token.FromString(value) for _, value in txn.cursor()]
        chosen = [t for t in tokens if not tenant or t.tenant == tenant]
        return sorted(chosen, key=lambda t: (t.created.seconds, t.created.nanos), reverse=True)

    def revoke(self, token_id: str) -> admin_pb2.Token:
        """Mark a token revoked (blocking LMDB write: call from a thread); NOT_FOUND for an unknown id."""
        with self._env.begin(write=True) as txn:
            digest = txn.get(token_id.encode(), db=self._ids)
            raw: Any = txn.get(digest, db=self._by_hash) if digest is not None else None
            if digest is None or raw is None:
                raise GatewayError(grpc.StatusCode.NOT_FOUND, errors.NOT_FOUND, f"No token with id {token_id}.")
            token = admin_pb2.Token.FromString(raw)
            token.revoked = True
            txn.put(digest, token.SerializeToString(), db=self._by_hash)
        return token


def _invalid(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, errors.INVALID_API_KEY, message)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
