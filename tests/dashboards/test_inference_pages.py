"""Tokens, latency SLAs, bursts and off-peak advice in the dashboard (AppTest, the real app
script on the marts demo_warehouse publishes): a tenant sees its own, an operator sees the
breach and the recommendations in GPUs and GPU-hours, and no money."""

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from dashboards import marts as mart_reader
from models.ledger import warehouse
from models.marts import tenant_mart_path
from models.planning.advice import dedicated_capacity_advice, off_peak_advice
from tests.dashboards.demo_warehouse import (
    ACME_TOKENS,
    DEDICATED_COST,
    DEDICATED_GPUS,
    INFERENCE_MODEL,
    TOTALS,
)
from tests.dashboards.test_app import _cards, _env, _text, signed_in

__all__ = ["_env"]  # the autouse fixture of test_app: fresh sessions per test
PAGE = "pages/tenant_inference.py"


def _mart_rows(home: Path, tenant: str, query: str) -> list[dict]:  # type: ignore[type-arg]
    con = warehouse.connect(tenant_mart_path(home / "marts", tenant), read_only=True)
    try:
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def _invoice_tokens(home: Path):  # type: ignore[no-untyped-def]
    """acme's October tokens as its invoice document stores them (the invoice's figures)."""
    from models.billing.invoices import from_row

    (row,) = _mart_rows(home, "acme", "SELECT * FROM invoices WHERE kind = 'invoice'")
    return from_row(row).invoice.tokens


def test_tenant_sees_its_tokens_and_the_invoices_cost_per_million_by_model(dashboard_env):
    at = signed_in("alice").switch_page(PAGE).run()
    assert not at.exception
    assert not at.error
    (tokens,) = _invoice_tokens(dashboard_env)
    assert (tokens.model, tokens.input_tokens, tokens.output_tokens) == (
        INFERENCE_MODEL, *ACME_TOKENS)
    shown = at.dataframe[0].value
    assert list(shown["model"]) == [INFERENCE_MODEL]
    assert list(shown["input tokens"]) == [ACME_TOKENS[0]]
    assert list(shown["output tokens"]) == [ACME_TOKENS[1]]
    # The figures the invoice shows, not a recomputation, as numbers (they sort as numbers)
    # shown with thousands separators and the precision the invoice gives them.
    money = {"input cost (USD)": (tokens.input_cost, "%,.2f"),
             "output cost (USD)": (tokens.output_cost, "%,.2f"),
             "USD per million input": (tokens.cost_per_million_input, "%,.6f"),
             "USD per million output": (tokens.cost_per_million_output, "%,.6f")}
    settings = json.loads(at.dataframe[0].proto.columns)
    for column, (figure, number_format) in money.items():
        assert shown[column].dtype.kind == "f", column
        assert shown[column][0] == float(figure), column
        assert settings[column]["type_config"]["format"] == number_format, column
    assert tokens.cost_per_million_input > 0


def test_tenant_sees_its_p95_against_its_target_in_and_out_of_bursts(dashboard_env):
    at = signed_in("alice").switch_page(PAGE).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["P95 in bursts"] == "9.00 s"
    assert metrics["P95 outside bursts"] == "3.00 s"
    assert metrics["Your P95 target"] == "6 s"
    assert [m.delta for m in at.metric if m.label == "P95 in bursts"] == ["breach"]
    charts = [(c.proto.spec, [pa.ipc.open_stream(d.data.data).read_all().to_pylist()
                              for d in c.proto.datasets]) for c in at.get("vega_lite_chart")]
    # The P95 chart carries the target line and the 20% margin; the rate chart the episodes.
    _, p95_data = next(c for c in charts if "p95_s" in c[0] and "rule" in c[0])
    (lines,) = [rows for rows in p95_data if rows and "line" in rows[0]]
    assert [r["line"] for r in lines] == ["target", "target x 1.2"]
    assert [r["p95_s"] for r in lines] == pytest.approx([6.0, 7.2])
    _, rate_data = next(c for c in charts if "requests_per_s" in c[0])
    assert [len(rows) for rows in rate_data] == [2, 24 * 60]  # the episodes, every minute
    episodes = at.dataframe[1].value
    assert [f"{t:%H:%M}" for t in episodes["start (UTC)"]] == ["10:00", "15:00"]
    assert [f"{t:%H:%M}" for t in episodes["end (UTC)"]] == ["10:30", "15:20"]
    assert "2 burst episode(s), shaded above." in _text(at)


def test_dedicated_and_off_peak_cards_carry_the_engines_figures(dashboard_env):
    at = signed_in("alice").switch_page(PAGE).run()
    off_peak, dedicated = _cards(at)  # a saving first, a cost last
    (row,) = _mart_rows(dashboard_env, "acme",
                        "SELECT * FROM dedicated_reservation_recommendations")
    assert row["recommended_gpus"] == DEDICATED_GPUS
    assert row["monthly_cost"] == Decimal(DEDICATED_COST)
    card = dedicated_capacity_advice(row)
    assert card.monthly_saving == -Decimal(DEDICATED_COST)
    assert (f"Reserve {DEDICATED_GPUS} dedicated premium GPUs for {INFERENCE_MODEL}** · costs "
            f"{Decimal(DEDICATED_COST):,.2f} USD more a month") in dedicated
    assert "9.0 s against your 6 s target" in dedicated
    moves = _mart_rows(dashboard_env, "acme", "SELECT * FROM off_peak_recommendations")
    saving = off_peak_advice(moves).monthly_saving  # type: ignore[union-attr]
    assert saving == moves[0]["saving"] > 0
    assert f"saves {saving:,.2f} USD a month" in off_peak
    assert "120 economy GPU-hours" in off_peak  # 2 GPUs x 12 peak hours x 5 days


def test_the_advice_page_shows_them_with_the_other_cards():
    at = signed_in("alice").switch_page("pages/tenant_insights.py").run()
    words = _cards(at)
    assert any("dedicated premium GPUs" in w for w in words)
    assert any("Run your batch work off peak" in w for w in words)
    assert "dedicated premium GPUs" in words[-1]  # advice that costs more comes last


def test_another_tenant_reads_only_its_own_mart_and_sees_nothing_of_acme(dashboard_env,
                                                                         monkeypatch):
    opened: list[Path] = []
    read = mart_reader._read
    monkeypatch.setattr(mart_reader, "_read", lambda path, *a: opened.append(path)
                        or read(path, *a))
    mart_reader._tenant_tables.clear()
    at = signed_in("zed").switch_page(PAGE).run()
    assert not at.exception
    text = _text(at)
    for secret in ("acme", "team-acme", INFERENCE_MODEL, "9.00 s",
                   f"{Decimal(DEDICATED_COST):,.2f}", f"{float(TOTALS['acme']):,.2f}"):
        assert secret not in text, secret
    assert set(opened) == {tenant_mart_path(dashboard_env / "marts", "zen")}
    # Its own endpoint, measured but judged against no target it never declared.
    metrics = {m.label: m.value for m in at.metric}
    # All its requests in the (1 s, 2 s] bucket: 95% of the way through it, as Prometheus reads it.
    assert metrics == {"P95 in bursts": "-", "P95 outside bursts": "1.95 s",
                       "Your P95 target": "none declared"}
    assert not any(m.delta for m in at.metric)
    assert "No burst episode in this window." in text
    assert not any('"rule"' in str(c.proto.spec) for c in at.get("vega_lite_chart"))
    assert "Nothing to change" in text


def test_operator_sees_the_breach_and_the_recommendations_in_gpus_without_money():
    at = signed_in("oscar").switch_page("pages/operator_inference.py").run()
    assert not at.exception
    text = _text(at)
    assert (f"SLA breaches: acme on {INFERENCE_MODEL}: P95 in bursts 9.00 s against 6 s"
            in [e.value for e in at.warning])
    dedicated = at.dataframe[1].value
    assert list(dedicated["recommended_gpus"]) == [DEDICATED_GPUS]
    moves = at.dataframe[2].value
    assert [Decimal(str(v)) for v in moves["moved_gpu_hours"]] == [120]
    assert [Decimal(str(v)) for v in moves["GPUs freed at peak"]] == [2]
    for money in ("USD", "monthly_cost", "saving", "charges", f"{Decimal(DEDICATED_COST):,.2f}",
                  DEDICATED_COST):
        assert money not in text, money


@pytest.mark.parametrize("table", ["latency_findings", "dedicated_reservation_recommendations",
                                   "off_peak_recommendations", "burst_episodes",
                                   "request_rates"])
def test_no_tenant_mart_holds_another_tenants_inference_rows(dashboard_env, table):
    for tenant in ("zen", "acme"):
        rows = _mart_rows(dashboard_env, tenant, f"SELECT * FROM {table}")
        assert all(r["tenant"] == tenant for r in rows)
        assert rows or tenant == "zen", (tenant, table)
