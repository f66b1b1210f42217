"""The dashboard box's wording on figures written out by hand: amounts too small for their places, a model name
longer than its column, one request."""

from chittycan.v1 import observability_pb2
from clients.dashboard_view import render_box, usd


def test_usd_keeps_small_amounts_visible() -> None:
    assert usd(12_450_000, 2) == "$12.45"
    assert usd(10_000, 3) == "$0.010"
    assert usd(0, 3) == "$0.000"
    assert usd(420, 3) == "$0.00042"  # 0.00042 USD would read $0.000
    assert usd(75, 3) == "$0.000075"
    assert usd(0.495, 3) == "$0.00000050"  # $0.0005 over 1,010 requests, as the playbook's script leaves it


def test_box_rows_for_long_names_and_single_requests() -> None:
    figures = observability_pb2.Dashboard(requests=1010, cache_hits=1000, uncached_requests=10, cost_micros=500)
    figures.models.add(model="gpt-4o", requests=1009)
    figures.models.add(model="text-embedding-3-small", requests=1)
    box = render_box(figures, "24h")
    assert "│ Cost per Request:      $0.00000050 avg" in box
    assert "│   gpt-4o:              100% (1,009 requests)" in box
    assert "│   text-embedding-3-small: 0% (1 request)" in box
