"""`can auth token create|list|revoke` and `can budget set|show`: admin commands over the engine's AdminService."""

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from chittycan.v1 import admin_pb2
from clients.admin import AdminClient, no_master_key, read_master_key
from clients.errors import GatewayCallError
from engine.config import Settings, load_settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `12h`, `30d` as seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 3600s, 90m, 12h, 30d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _usd(micros: int) -> str:
    return f"${micros / 1e6:,.2f}"


def _run(action: Callable[[AdminClient], Awaitable[int]], settings: Settings | None = None) -> int:
    settings = settings or load_settings()
    key = read_master_key(settings.tenancy.master_key, settings.data_dir)
    if key is None:
        print(no_master_key(settings.data_dir))
        return 2

    async def run() -> int:
        async with AdminClient(settings.engine_addr, key) as admin:
            return await action(admin)

    try:
        return asyncio.run(run())
    except GatewayCallError as err:
        print(f"can: {err.message}")
        return 1


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create a token and print its secret once. Without --tenant the token goes to the deployment's tenant
    (CHITTY_TENANT_ID) when one is set, with its budget (CHITTY_BUDGET_MONTHLY_USD) unless --budget-monthly-usd
    says otherwise; else to a tenant of its own."""
    settings = load_settings()
    tenancy = settings.tenancy
    request = admin_pb2.CreateTokenRequest(
        tenant=args.tenant or tenancy.default_tenant,
        scopes=args.scopes.split(","),
        name=args.name or "",
        ttl_seconds=args.expires_in,
    )
    if args.budget_monthly_usd is not None:
        request.monthly_budget_micros = round(args.budget_monthly_usd * 1_000_000)
    elif args.tenant is None and tenancy.default_tenant and tenancy.default_monthly_micros:
        request.monthly_budget_micros = tenancy.default_monthly_micros

    async def create(admin: AdminClient) -> int:
        created = await admin.create_token(request)
        token = created.token
        print(created.secret)
        print(f"id {token.id}  tenant {token.tenant}  scopes {','.join(token.scopes)}", end="")
        if token.HasField("expires"):
            print(f"  expires {_time(token.expires.seconds)}", end="")
        if request.HasField("monthly_budget_micros"):
            print(f"  budget {_usd(request.monthly_budget_micros)}/month", end="")
        print("\nThis is the only time the token is shown: store it now (export OPENAI_API_KEY=<token>).")
        return 0

    return _run(create, settings)


def cmd_token_list(args: argparse.Namespace) -> int:
    """List tokens (never their secrets)."""

    async def list_tokens(admin: AdminClient) -> int:
        tokens = (await admin.list_tokens(args.tenant or "")).tokens
        print(f"{'ID':<22}{'PREFIX':<14}{'TENANT':<20}{'SCOPES':<18}{'CREATED':<22}{'EXPIRES':<22}STATUS")
        for token in tokens:
            expires = _time(token.expires.seconds) if token.HasField("expires") else "never"
            status = "revoked" if token.revoked else "active"
            print(
                f"{token.id:<22}{token.prefix + '…':<14}{token.tenant:<20}{','.join(token.scopes):<18}"
                f"{_time(token.created.seconds):<22}{expires:<22}{status}"
            )
        return 0

    return _run(list_tokens)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token by id."""

    async def revoke(admin: AdminClient) -> int:
        token = (await admin.revoke_token(args.id)).token
        print(f"revoked {token.id} (tenant {token.tenant})")
        return 0

    return _run(revoke)


def _print_spend(spend: admin_pb2.TenantSpend) -> None:
    budget = _usd(spend.budget_micros) if spend.HasField("budget_micros") else "none"
    print(
        f"tenant {spend.tenant}  month {spend.month}  spent {_usd(spend.spent_micros)}  "
        f"in flight {_usd(spend.reserved_micros)}  budget {budget}"
    )


def cmd_budget_set(args: argparse.Namespace) -> int:
    """Set a tenant's monthly budget."""

    async def set_budget(admin: AdminClient) -> int:
        _print_spend((await admin.set_budget(args.tenant, round(args.usd * 1_000_000))).spend)
        return 0

    return _run(set_budget)


def cmd_budget_show(args: argparse.Namespace) -> int:
    """Show a tenant's spend and budget."""

    async def show(admin: AdminClient) -> int:
        _print_spend((await admin.get_spend(args.tenant, args.month or "")).spend)
        return 0

    return _run(show)


def _time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `auth` and `budget` under `can`."""
    auth = commands.add_parser("auth", help="gateway tokens").add_subparsers(dest="action", required=True)
    token = auth.add_parser("token", help="create, list and revoke chitty_ tokens").add_subparsers(
        dest="token_action", required=True
    )
    create = token.add_parser("create", help="create a token (printed once)")
    create.add_argument("--scopes", default="ai:read,ai:write", help="comma-separated: ai:read, ai:write")
    create.add_argument(
        "--tenant",
        help="tenant charged for the token's requests (default: CHITTY_TENANT_ID if set, else a new one)",
    )
    create.add_argument(
        "--budget-monthly-usd",
        type=float,
        help="monthly budget of the tenant in USD (default for CHITTY_TENANT_ID's tenant: CHITTY_BUDGET_MONTHLY_USD)",
    )
    create.add_argument("--expires-in", type=parse_duration, default=0, help="lifetime, e.g. 30d (default never)")
    create.add_argument("--name", help="a label")
    create.set_defaults(func=cmd_token_create)
    listing = token.add_parser("list", help="list tokens")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.set_defaults(func=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", help="token id (tok_...)")
    revoke.set_defaults(func=cmd_token_revoke)

    budget = commands.add_parser("budget", help="tenant budgets").add_subparsers(dest="action", required=True)
    set_parser = budget.add_parser("set", help="set a tenant's monthly budget (0 removes it)")
    set_parser.add_argument("tenant")
    set_parser.add_argument("usd", type=float)
    set_parser.set_defaults(func=cmd_budget_set)
    show = budget.add_parser("show", help="a tenant's spend this month")
    show.add_argument("tenant")
    show.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    show.set_defaults(func=cmd_budget_show)
