"""Who is calling: a gateway token (`chitty_...`, looked up by hash) or a pass-through provider key (never stored)."""

import hashlib
from dataclasses import dataclass, field

import grpc

from engine import errors
from engine.errors import GatewayError
from engine.tokens import TOKEN_PREFIX, TokenStore

READ = "ai:read"
WRITE = "ai:write"
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY). Without a key, use the models inside the gateway: local/smollm2-135m "
    "(chat) and local/minilm-l6 (embeddings), or send every model to them with `can config dev --use-local`."
)
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `upstream_key` is the client's own provider key when it is passed through, else None (the gateway's keys are
    used). `scope_id` names the caller's cache namespace without revealing the key; `tenant` is who is charged.
    `named_tenant` is False for the anonymous per-key tenant of a pass-through key.
    """

    scope_id: str
    tenant: str
    key_id: str = ""
    upstream_key: str | None = field(default=None, repr=False)
    scopes: frozenset[str] = frozenset({READ, WRITE})
    named_tenant: bool = False

    def require(self, scope: str) -> None:
        """Raise PERMISSION_DENIED unless the caller holds `scope`."""
        if scope not in self.scopes:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                errors.PERMISSION_DENIED,
                f"The gateway token lacks the scope {scope} this operation needs.",
            )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` value (the scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Authenticator:
    """Turns the credential of a call into a Principal or raises UNAUTHENTICATED.

    Pass-through keys are charged to `default_tenant` when the deployment names one (CHITTY_TENANT_ID), else to a
    tenant of their own; a tenant header is honoured for them only when the deployment allows it.
    """

    def __init__(self, tokens: TokenStore, *, default_tenant: str = "", allow_tenant_header: bool = False) -> None:
        self._tokens = tokens
        self._default_tenant = default_tenant
        self._allow_tenant_header = allow_tenant_header

    def authenticate(self, authorization: str | None, tenant_header: str = "") -> Principal:
        """The caller; raises GatewayError(UNAUTHENTICATED) for a missing, unknown, revoked or expired credential."""
        secret = bearer_token(authorization)
        if secret is None:
            raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, errors.MISSING_API_KEY, _MISSING_KEY)
        if secret.startswith(TOKEN_PREFIX):
            token = self._tokens.lookup(secret)
            return Principal(
                scope_id=f"tenant:{token.tenant}",
                tenant=token.tenant,
                key_id=token.id,
                scopes=frozenset(token.scopes),
                named_tenant=True,
            )
        return self._passthrough(secret, tenant_header)

    def anonymous(self) -> Principal:
        """A caller without a credential, allowed only for models served inside the engine."""
        return Principal(
            scope_id=ANONYMOUS,
            tenant=self._default_tenant or ANONYMOUS,
            named_tenant=bool(self._default_tenant),
        )

    def _passthrough(self, secret: str, tenant_header: str) -> Principal:
        digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
        tenant = (tenant_header if self._allow_tenant_header else "") or self._default_tenant
        return Principal(
            scope_id=f"key:{digest}",
            tenant=tenant or f"key:{digest}",
            upstream_key=secret,
            named_tenant=bool(tenant),
        )
