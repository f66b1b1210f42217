"""Per-tenant monthly budgets (UTC calendar months, micro-USD), enforced atomically across engine processes.

A call reserves an estimate before it goes upstream and settles its real cost afterwards (or releases the hold
when it fails). Each step is one LMDB write transaction, and LMDB serializes writers across processes, so
concurrent calls see each other's holds: a call is admitted only while settled spend plus holds is below the
budget, which bounds any overshoot by what is in flight. Holds carry an expiry, so a process that dies between
reserve and settle never keeps money reserved for longer than that.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from chittycan.v1 import admin_pb2
from engine import errors
from engine.errors import GatewayError
from engine.store import Store


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: where it is and how much of the budget the call may still use."""

    tenant: str
    month: str
    reservation_id: str
    amount_micros: int
    budget_micros: int
    allowance_micros: int  # budget left for this call when it was admitted (its own hold included)


@dataclass(frozen=True, slots=True)
class Settled:
    """The tenant's position after a settle, and the alert threshold this call crossed (0 = none)."""

    remaining_micros: int
    alert_percent: int


def month_of(unix: float) -> str:
    """The UTC calendar month (YYYY-MM) of a unix time."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m")


class Budgets:
    """Budgets and spend in LMDB. Methods that write block on the LMDB lock: call them from a thread."""

    def __init__(
        self,
        store: Store,
        *,
        alert_percents: tuple[int, ...] = (50, 80, 100),
        hold_seconds: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._env = store.env
        self._budgets = store.db("budgets")
        self._spend = store.db("spend")
        self._alerts = tuple(sorted(alert_percents))
        self._hold_seconds = hold_seconds
        self._clock = clock

    def budget(self, tenant: str) -> int | None:
        """The tenant's monthly budget in micro-USD, or None."""
        with self._env.begin(db=self._budgets) as txn:
            raw = txn.get(tenant.encode())
        return None if raw is None else int(raw)

    def set_budget(self, tenant: str, micros: int) -> None:
        """Set (or, with 0, remove) a tenant's monthly budget."""
        with self._env.begin(write=True, db=self._budgets) as txn:
            if micros > 0:
                txn.put(tenant.encode(), str(micros).encode())
            else:
                txn.delete(tenant.encode())

    def reserve(self, tenant: str, estimate_micros: int) -> Hold | None:
        """Hold `estimate_micros` for a call; None when the tenant has no budget.

        Raises RESOURCE_EXHAUSTED (BUDGET_EXCEEDED) once settled spend plus holds reaches the budget.
        """
        now = self._clock()
        month = month_of(now)
        with self._env.begin(write=True) as txn:
            raw_budget = txn.get(tenant.encode(), db=self._budgets)
            if raw_budget is None:
                return None
            budget = int(raw_budget)
            key = _spend_key(tenant, month)
            spend = _read(txn, self._spend, key)
            _drop_lapsed(spend, now)
            held = sum(r.amount_micros for r in spend.reservations.values())
            if spend.spent_micros + held >= budget:
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    errors.BUDGET_EXCEEDED,
                    f"You exceeded your current quota: tenant {tenant} has used its monthly budget of "
                    f"${budget / 1e6:.2f} for {month}.",
                )
            reservation_id = secrets.token_hex(8)
            spend.reservations[reservation_id].CopyFrom(
                admin_pb2.Reservation(amount_micros=estimate_micros, expires_unix=int(now) + self._hold_seconds)
            )
            txn.put(key, spend.SerializeToString(), db=self._spend)
        allowance = budget - spend.spent_micros - held
        return Hold(tenant, month, reservation_id, estimate_micros, budget, allowance)

    def settle(self, hold: Hold, cost_micros: int) -> Settled:
        """Replace the hold by the real cost; report the remaining budget and any alert threshold crossed."""
        with self._env.begin(write=True) as txn:
            key = _spend_key(hold.tenant, hold.month)
            spend = _read(txn, self._spend, key)
            spend.reservations.pop(hold.reservation_id, None)
            before = spend.spent_micros
            spend.spent_micros += max(0, cost_micros)
            alert = 0
            for percent in self._alerts:
                threshold = hold.budget_micros * percent // 100
                if before < threshold <= spend.spent_micros and percent > spend.alerted_percent:
                    alert = percent
            if alert:
                spend.alerted_percent = alert
            txn.put(key, spend.SerializeToString(), db=self._spend)
            held = sum(r.amount_micros for r in spend.reservations.values())
        return Settled(hold.budget_micros - spend.spent_micros - held, alert)

    def release(self, hold: Hold) -> None:
        """Drop a hold without charging (the call failed before costing anything)."""
        with self._env.begin(write=True) as txn:
            key = _spend_key(hold.tenant, hold.month)
            spend = _read(txn, self._spend, key)
            if spend.reservations.pop(hold.reservation_id, None) is not None:
                txn.put(key, spend.SerializeToString(), db=self._spend)

    def spend(self, tenant: str, month: str = "") -> admin_pb2.TenantSpend:
        """A tenant's settled spend, live holds and budget for a month (default: this one)."""
        now = self._clock()
        month = month or month_of(now)
        with self._env.begin() as txn:
            spend = _read(txn, self._spend, _spend_key(tenant, month))
        _drop_lapsed(spend, now)
        out = admin_pb2.TenantSpend(
            tenant=tenant,
            month=month,
            spent_micros=spend.spent_micros,
            reserved_micros=sum(r.amount_micros for r in spend.reservations.values()),
        )
        if (budget := self.budget(tenant)) is not None:
            out.budget_micros = budget
        return out


def _spend_key(tenant: str, month: str) -> bytes:
    return f"{tenant}\x00{month}".encode()


def _read(txn: Any, db: Any, key: bytes) -> admin_pb2.MonthSpend:
    raw = txn.get(key, db=db)
    return admin_pb2.MonthSpend() if raw is None else admin_pb2.MonthSpend.FromString(raw)


def _drop_lapsed(spend: admin_pb2.MonthSpend, now: float) -> None:
    for reservation_id in [k for k, r in spend.reservations.items() if r.expires_unix <= now]:
        del spend.reservations[reservation_id]
