"""Who is calling: a pass-through provider key (never stored) or, later, a gateway token."""

import hashlib
from dataclasses import dataclass, field

import grpc

from engine import errors
from engine.errors import GatewayError

GATEWAY_TOKEN_PREFIX = "chitty_"
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY)."
)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `upstream_key` is the client's own provider key when it is passed through, else None (the gateway's keys
    are used). `scope_id` names the caller's cache and accounting namespace without revealing the key.
    """

    scope_id: str
    tenant: str
    key_id: str = ""
    upstream_key: str | None = field(default=None, repr=False)
    scopes: frozenset[str] = frozenset({"ai:read", "ai:write"})


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` value (the scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def passthrough_principal(key: str) -> Principal:
    """A provider key passed through: its own scope, identified by a hash prefix, never stored."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Principal(scope_id=f"key:{digest}", tenant=f"key:{digest}", upstream_key=key)


class Authenticator:
    """Turns the credential of a call into a Principal or raises UNAUTHENTICATED."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """Raises GatewayError(UNAUTHENTICATED) for a missing, malformed or unknown credential."""
        token = bearer_token(authorization)
        if token is None:
            raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, errors.MISSING_API_KEY, _MISSING_KEY)
        if token.startswith(GATEWAY_TOKEN_PREFIX):
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                errors.INVALID_API_KEY,
                "Incorrect API key provided: the gateway token is unknown.",
            )
        return passthrough_principal(token)
