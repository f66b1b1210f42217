"""Budgets on a real LMDB store: reserve/settle/release, month rollover, lapsed holds, restarts, alerts, tokens."""

from pathlib import Path

import grpc
import pytest

from engine.budgets import Budgets
from engine.errors import GatewayError
from engine.store import Store
from engine.tokens import TokenStore

NOV = 1_763_000_000.0  # 2025-11-13 UTC
DEC = 1_764_600_000.0  # 2025-12-01 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path, map_size=16 << 20)


def test_reserve_settle_and_refuse_at_the_budget(store: Store) -> None:
    budgets = Budgets(store, clock=Clock(NOV))
    assert budgets.reserve("t", 100) is None, "no budget, no hold"
    budgets.set_budget("t", 1_000)
    first = budgets.reserve("t", 600)
    second = budgets.reserve("t", 600)
    assert first is not None
    assert second is not None
    with pytest.raises(GatewayError) as caught:
        budgets.reserve("t", 1)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "BUDGET_EXCEEDED"
    budgets.settle(first, 100)
    budgets.release(second)
    spend = budgets.spend("t")
    assert (spend.spent_micros, spend.reserved_micros, spend.budget_micros) == (100, 0, 1_000)
    assert budgets.reserve("t", 10) is not None


def test_month_rollover(store: Store) -> None:
    clock = Clock(NOV)
    budgets = Budgets(store, clock=clock)
    budgets.set_budget("t", 1_000)
    hold = budgets.reserve("t", 1_000)
    assert hold is not None
    budgets.settle(hold, 1_000)
    with pytest.raises(GatewayError):
        budgets.reserve("t", 1)
    clock.now = DEC
    assert budgets.reserve("t", 1) is not None
    assert budgets.spend("t", "2025-11").spent_micros == 1_000
    assert budgets.spend("t").month == "2025-12"


def test_a_crashed_hold_lapses(store: Store, tmp_path: Path) -> None:
    clock = Clock(NOV)
    budgets = Budgets(store, hold_seconds=60, clock=clock)
    budgets.set_budget("t", 1_000)
    assert budgets.reserve("t", 1_000) is not None  # and the process "dies" without settling
    store.close()
    clock.now += 61
    restarted = Budgets(Store(tmp_path, map_size=16 << 20), hold_seconds=60, clock=clock)
    assert restarted.spend("t").reserved_micros == 0
    assert restarted.reserve("t", 500) is not None


def test_spend_survives_a_restart(store: Store, tmp_path: Path) -> None:
    budgets = Budgets(store, clock=Clock(NOV))
    budgets.set_budget("t", 10_000)
    hold = budgets.reserve("t", 100)
    assert hold is not None
    budgets.settle(hold, 1_234)
    store.close()
    assert Budgets(Store(tmp_path), clock=Clock(NOV)).spend("t").spent_micros == 1_234


def test_alert_thresholds_fire_once_each(store: Store) -> None:
    budgets = Budgets(store, alert_percents=(50, 80, 100), clock=Clock(NOV))
    budgets.set_budget("t", 1_000)
    alerts = []
    for cost in (400, 200, 100, 100, 300):
        hold = budgets.reserve("t", cost)
        assert hold is not None
        alerts.append(budgets.settle(hold, cost).alert_percent)
    assert alerts == [0, 50, 0, 80, 100]


def test_tokens_expire_and_are_stored_hashed(store: Store, tmp_path: Path) -> None:
    clock = Clock(NOV)
    tokens = TokenStore(store, clock=clock)
    token, secret = tokens.create(tenant="t", scopes=["ai:read"], name="", ttl_seconds=60)
    assert tokens.lookup(secret).id == token.id
    clock.now += 61
    with pytest.raises(GatewayError, match="expired"):
        tokens.lookup(secret)
    with pytest.raises(GatewayError, match="unknown"):
        tokens.lookup("chitty_not-a-token")
    with pytest.raises(GatewayError):
        tokens.create(tenant="t", scopes=["ai:admin"], name="", ttl_seconds=0)
    store.close()
    assert secret.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "store").iterdir())
