"""Every page for every role, sign-in, and every way a tenant might reach another tenant,
through streamlit.testing.v1.AppTest (the real app script, no browser)."""

import json
import logging
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import gate, ui
from dashboards.auth import hash_password, load_users, parse_role, save_users
from dashboards.routes import PAGES
from dashboards.sessions import SessionStore, SignInLimiter
from models.billing.pricing import UsageHour, price_invoice
from models.billing.rate_cards import load_rate_cards, load_tenants
from models.marts import tenant_mart_path
from tests.dashboards.conftest import OIDC_FINANCE, PASSWORD
from tests.dashboards.demo_warehouse import (
    ADJUSTMENT,
    DEMO_CARD,
    EVIL,
    EXAMPLE,
    PLAN_SAVING,
    RESERVATION_SAVING,
    TOTALS,
)

APP = str(Path(gate.__file__).with_name("app.py"))
PAGE_FILES = {kind: [path for path, *_ in pages] for kind, pages in PAGES.items()}


def _text(at: AppTest) -> str:
    """Everything the run put on screen that a person could read."""
    parts = [str(e.value) for kind in ("title", "header", "subheader", "markdown", "caption",
                                       "metric", "info", "error", "selectbox")
             for e in getattr(at, kind)]
    parts += [e.label for e in at.metric]
    parts += [e.value.to_string() for e in (*at.dataframe, *at.table)]
    parts += [str(o) for s in at.selectbox for o in s.options]
    return "\n".join(parts)


def _buttons(at: AppTest) -> list[str]:
    """The buttons a person sees: not the sign-in page's hidden preload (gate.py)."""
    return [b.label for b in at.button if not (b.key or "").startswith(gate.PRELOAD_KEY)]


# What dashboards/server.py puts in st.user for a browser on every connection.
BROWSER_A = {gate.BROWSER: "a" * 64, gate.CLIENT: "192.0.2.1"}
BROWSER_B = {gate.BROWSER: "b" * 64, gate.CLIENT: "198.51.100.7"}


def new_app(browser: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.user = dict(BROWSER_A if browser is None else browser)
    return at


def signed_in(name: str) -> AppTest:
    at = new_app().run()
    at.text_input[0].input(name)
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    return at


@pytest.fixture(autouse=True)
def _env(dashboard_env, monkeypatch):
    # Session records and sign-in locks live as long as the server process; each test
    # starts with none, as after a restart.
    store = SessionStore()
    monkeypatch.setattr(gate, "STORE", store)
    monkeypatch.setattr(ui, "STORE", store)
    monkeypatch.setattr(gate, "LIMITER", SignInLimiter())
    return dashboard_env


def test_sign_in_form_and_wrong_password(caplog):
    at = new_app().run()
    assert at.title[0].value == "GPU chargeback"
    assert "10,25" not in _text(at)
    at.text_input[0].input("alice")
    at.text_input[1].input("not the password")
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at.button[0].click().run()
    assert at.error[0].value == "Unknown user name or wrong password."
    assert "failed sign-in: user='alice' client=192.0.2.1" in caplog.text
    assert "10,25" not in _text(at)


@pytest.mark.parametrize(("user", "kind"), [("alice", "tenant"), ("fiona", "finance"),
                                            ("oscar", "operator")])
def test_every_page_of_every_role_renders(user, kind):
    at = signed_in(user)
    for page in PAGE_FILES[kind]:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
        assert at.title[0].value != "Access denied"


def test_tenant_overview_shows_its_bill():
    at = signed_in("alice")
    metrics = {m.label: m.value for m in at.metric}
    # DESIGN.md's 10,252.15 plus the 5.70 adjustment for late usage.
    assert metrics["Billed for the month"] == "10,257.85 USD"
    assert metrics["Forecast to month end"] == "10,257.85 USD"
    # cost and GPU-hours by day; by model, size class and tier are tables; the date range
    # is drawn on request
    assert len(at.get("vega_lite_chart")) == 2
    assert not at.date_input
    at.toggle(key="overview-range-shown").set_value(True).run()
    # used against allocated GPU-hours over the date range (the month's days by default)
    assert len(at.get("vega_lite_chart")) == 3
    # by model, size class and tier: static tables (st.table), by workload kind a data grid
    by_tier = next(t.value for t in at.table if "hardware_tier" in t.value.index.names)
    by_kind = next(d.value for d in at.dataframe if "workload kind" in d.value.columns)
    # The demo's usage is all inference: its October GPU-hours (2,232 premium + 1,200 standard
    # + 300 economy, and 10 of late L4 usage) and the on-demand cost the tier table shows, to
    # the cent.
    assert list(by_kind["workload kind"]) == ["inference"]
    assert by_kind["GPU-hours"].sum() == pytest.approx(3742)
    assert by_kind["on-demand cost (USD)"].sum() == pytest.approx(
        by_tier["on-demand cost (USD)"].sum(), abs=0.005)
    at.switch_page("pages/tenant_invoices.py").run()
    assert f"{float(TOTALS['acme']):,.2f}" in _text(at)


def test_overview_colours_each_tier_the_same_on_both_charts_and_in_every_month():
    at = signed_in("alice")

    def colours() -> list[dict[str, str]]:
        scales = [json.loads(c.proto.spec)["encoding"]["color"]["scale"]
                  for c in at.get("vega_lite_chart")[:2]]
        return [dict(zip(s["domain"], s["range"], strict=True)) for s in scales]

    by_cost, by_hours = colours()
    # The demo tenant's three tiers, each its own colour from dashboards/ui.py, the same on
    # the cost and the GPU-hours chart; fixed charges the colour that means fixed charges.
    assert set(by_hours) == {"economy", "premium", "standard"}
    assert len(set(by_hours.values())) == 3
    assert set(by_hours.values()) <= set(ui.TIER_COLOURS)
    assert not set(ui.TIER_COLOURS) & set(ui.COLOURS.values())
    assert by_cost == {**by_hours, "fixed charges": ui.COLOURS["fixed charges"]}
    at.selectbox[0].select(at.selectbox[0].options[-1]).run()
    assert colours() == [by_cost, by_hours]


def _cards(at: AppTest) -> list[str]:
    """The words of each advice card, in the order shown."""
    return [" ".join(m.value for m in block.markdown)
            for block in at.main if getattr(block, "key", None) is not None
            and str(block.key).startswith("advice-")]


def test_first_screen_says_what_changed_what_it_costs_and_what_to_do():
    at = signed_in("alice")
    text = _text(at)
    # The latest confirmed shift of 31 October's analysis (premium, from 72 to 96 a day).
    assert "Your gpu" not in text
    assert "Your premium GPU-hours a day moved from 72 to 96 on Oct 21." in text
    # November on acme's plan at its usage since the change, as the plan projection priced it.
    assert "About **7,103.12 USD** in 2026-11 on your growth plan" in text
    # The advice that saves most, in words, with its saving.
    assert (f"Reserve 3 premium GPUs (now 2): saves {float(RESERVATION_SAVING):,.2f} USD a "
            "month.") in text
    # the plan, the off-peak move, the budget and the dedicated reservation
    assert "4 more on the Advice page." in text
    # The month-end forecast with its range, and where the budget stands.
    assert ("About 12,400.00 USD by the end of 2026-10 (95% range 11,600.00 to 13,200.00), "
            "from your usage through Oct 20.") in text
    assert ("You have used 80% of your 10,000.00 USD budget; at this rate it runs out on "
            "Oct 25.") in text


def test_first_screen_without_forecast_or_budget_says_so():
    at = signed_in("zed")
    text = _text(at)
    assert "No budget is set for this month." in text
    assert "at this month's rate." in text


def test_every_advice_card_saving_equals_the_pricing_engines_projection():
    at = signed_in("alice").switch_page("pages/tenant_insights.py").run()
    assert not at.exception
    # Savings first, largest first; then the budget; then what costs more (the dedicated
    # reservation, tests/dashboards/test_inference_pages.py).
    reserve, plan, _off_peak, budget, _dedicated = _cards(at)
    # The plan card: November priced here by price_invoice on the projection the card names
    # (1,440 standard GPU-hours of a 13B model), growth against starter.
    card = load_rate_cards(DEMO_CARD)[0]
    tenant = load_tenants(EXAMPLE / "tenants.yaml", [card])["acme"]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    usage = [UsageHour(start + timedelta(hours=h), "standard", "medium", Decimal(2))
             for h in range(720)]
    bills = {p: price_invoice(replace(tenant, plan=p), card, "2026-11", usage,
                              credit_available=Decimal(0)).total for p in ("growth", "starter")}
    assert bills["growth"] - bills["starter"] == Decimal(PLAN_SAVING)
    assert "Switch from the growth plan to starter** · saves 299.52 USD a month" in plan
    assert "Your standard GPU-hours a day fell to 33% of what it was, from 144 to 48" in plan
    assert "If you do nothing:* 2026-11 is billed on growth: about 7,103.12 USD." in plan
    # The reservation card: its expected costs at acme's own next on-demand price
    # (demo_warehouse's docstring works it out by hand).
    assert "Reserve 3 premium GPUs (now 2)** · saves 1,136.06 USD a month" in reserve
    assert "about 6,830.06 USD a month with 2 reserved" in reserve
    # The budget card moves no price: it says when the budget runs out, and what then.
    assert "Raise the 2026-10 budget to at least 12,400.00 USD or slow down** · no price " \
        "change" in budget
    assert "at this rate it runs out on Oct 25" in budget
    assert len(at.get("vega_lite_chart")) == 3  # the usage chart of each GPU-hours card


def test_bill_explained_links_gpu_hours_to_units_to_invoice_lines():
    at = signed_in("alice").switch_page("pages/tenant_bill.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    # DESIGN.md's acme: 2,232 premium + 1,200 standard + 300 economy GPU-hours, 1,488 of them
    # reserved; 930 + 1,320 + 300 billable units; the closed invoice's total.
    assert metrics["GPU-hours"] == "3,732.0"
    assert metrics["Covered by reservations"] == "1,488.0 GPU-hours"
    assert metrics["Billable on-demand units"] == "2,550.0"
    (total,) = [v for k, v in metrics.items() if k.startswith("Total of INV-")]
    assert total == "10,252.15 USD"
    units, steps = (t.value for t in at.table)  # static tables, in line order
    premium = units[units["hardware tier"] == "premium"].iloc[0]
    assert (premium["billable units"], premium["on invoice lines"]) == (930.0, "1, 2, 6")
    assert list(steps["line"]) == list(range(1, 8))
    assert steps["running total"].iloc[-1] == pytest.approx(10252.15)
    assert len(at.get("vega_lite_chart")) == 1  # the waterfall


def test_tenant_date_range_gives_daily_costs_that_add_up_to_the_bill():
    at = signed_in("alice")
    at.toggle(key="overview-range-shown").set_value(True).run()
    # The month's days by default: daily costs add up to what October was billed, invoice
    # and debit note (10,252.15 + 5.70).
    assert "2026-10-01 to 2026-10-31: estimated cost 10,257.85 USD" in _text(at)
    assert any(b.label == "Daily cost (CSV)" for b in at.get("download_button"))
    at.date_input(key="overview-range").set_value(
        (date(2026, 10, 1), date(2026, 10, 2))).run()
    (two_days,) = [c.value for c in at.caption if c.value.startswith("2026-10-01 to ")]
    assert two_days.startswith("2026-10-01 to 2026-10-02: estimated cost ")
    assert "10,257.85" not in two_days


def test_finance_amounts_are_numbers_with_currency_and_trends_by_tenant():
    at = signed_in("fiona").switch_page("pages/finance_revenue.py").run()
    assert not at.exception
    revenue = at.dataframe[0].value
    assert revenue["billed_total"].dtype.kind == "f"
    assert "Billed per tenant, month by month" in _text(at)


def test_budget_and_forecast_are_shown_to_their_tenant_finance_and_operators():
    at = signed_in("alice")
    at.switch_page("pages/tenant_budget.py").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Spent"] == "8,000.00 USD"
    assert metrics["Forecast for the month"] == "12,400.00 USD"
    assert metrics["At this rate the budget runs out on"] == "2026-10-25"
    assert len(at.get("vega_lite_chart")) == 2  # burn-down and fan chart
    assert "Your budget has not held any of your queues." in _text(at)
    at = signed_in("fiona")
    at.switch_page("pages/finance_revenue.py").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["2026-10: forecast invoiced (USD)"] == "12,400.00 USD"
    (revenue,) = [m for m in at.metric if m.label.startswith("2026-10")]
    assert revenue.delta == "range 11,600.00 to 13,200.00"
    at = signed_in("oscar")
    at.switch_page("pages/operator_holds.py").run()
    assert "zen-queue" in _text(at)
    assert "12,400" not in _text(at)


@pytest.mark.parametrize(("user", "own"), [("alice", "acme"), ("zed", "zen"), ("eve", EVIL)])
def test_tenant_pages_show_nothing_of_other_tenants(user, own):
    at = signed_in(user)
    for page in PAGE_FILES["tenant"]:
        at.switch_page(page).run()
        text = _text(at)
        for other, total in TOTALS.items():
            if other == own:
                continue
            assert f"{float(total):,.2f}" not in text, page
            assert other not in text, page


def test_operator_sees_no_invoice_amounts():
    at = signed_in("oscar")
    for page in PAGE_FILES["operator"]:
        at.switch_page(page).run()
        text = _text(at)
        assert "USD" not in text
        for total in TOTALS.values():
            assert f"{float(total):,.2f}" not in text


def test_finance_sees_every_invoice():
    at = signed_in("fiona")
    text = _text(at)
    (documents, *_) = at.dataframe
    frame = documents.value
    # Totals are numbers (they sort as numbers) shown with their currency.
    assert frame["total"].dtype.kind == "f"
    assert dict(zip(frame["tenant"], frame["total"], strict=True)) == {
        tenant: float(total) for tenant, total in TOTALS.items()}
    for tenant in TOTALS:
        assert tenant in text
    assert "adjusted" in text
    assert ADJUSTMENT in text


@pytest.mark.parametrize("key", ["tenant", "tenant_id"])
def test_a_query_parameter_naming_another_tenant_is_denied_and_logged(caplog, key):
    at = signed_in("alice")
    at.query_params[key] = "zen"
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at.run()
    assert at.title[0].value == "Access denied"
    assert "25,000" not in _text(at)
    assert "10,25" not in _text(at)
    assert "user='alice' attempted='zen'" in caplog.text


def test_own_tenant_in_the_query_is_harmless():
    at = signed_in("alice")
    at.query_params["tenant"] = "acme"
    at.run()
    assert at.title[0].value == "Costs and usage"


def test_a_tampered_session_value_is_denied_and_logged(caplog):
    at = signed_in("alice")
    at.session_state["tenant"] = "zen"
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at.run()
    assert at.title[0].value == "Access denied"
    assert "attempted='zen'" in caplog.text


def test_a_forged_session_token_signs_nobody_in(caplog):
    at = signed_in("alice")
    for forged in ({"user": "zed", "mac": "0" * 64}, "zed", "0" * 43):
        at.session_state[gate.AUTH_KEY] = forged
        with caplog.at_level(logging.WARNING, logger="dashboards.access"):
            at.run()
        assert at.title[0].value == "GPU chargeback"
        assert [t.label for t in at.text_input] == ["User name", "Password"]
        assert "25,000" not in _text(at)
        assert "10,25" not in _text(at)
    assert "session ended: user=None reason=UNKNOWN" in caplog.text


def test_pages_of_other_roles_have_no_route_and_refuse_to_run():
    at = signed_in("alice")
    with pytest.raises(ValueError, match="registered"):
        at.switch_page("pages/finance_invoices.py")
    # Run on its own (as if routed to), a finance page still checks the role itself.
    page = AppTest.from_file(str(Path(APP).with_name("pages") / "finance_invoices.py"),
                             default_timeout=30)
    page.user = dict(BROWSER_A)
    alice = load_users(gate.users_path())["alice"]
    page.session_state[gate.AUTH_KEY] = gate.STORE.open(alice, BROWSER_A[gate.BROWSER])
    page.run()
    assert page.title[0].value == "Access denied"
    assert ADJUSTMENT not in _text(page)


OIDC_SETTINGS = {"redirect_uri": "http://127.0.0.1:1/oauth2callback", "cookie_secret": "x",
                 "client_id": "x", "client_secret": "x",
                 "server_metadata_url": "http://127.0.0.1:1/.well-known"}


def test_oidc_maps_the_email_to_a_role():
    at = new_app()
    at.secrets["auth"] = OIDC_SETTINGS
    at.user = {"is_logged_in": False, **BROWSER_A}
    at.run()
    assert _buttons(at) == ["Sign in"]
    assert not at.text_input
    at.user = {"is_logged_in": True, "email": OIDC_FINANCE.upper(), **BROWSER_A}
    at.run()
    assert at.title[0].value == "Invoices and exports"
    at = new_app()
    at.secrets["auth"] = OIDC_SETTINGS
    at.user = {"is_logged_in": True, "email": "stranger@example.com", **BROWSER_A}
    at.run()
    assert at.title[0].value == "Access denied"


@pytest.mark.parametrize("missing", ["client_secret", "server_metadata_url", "cookie_secret"])
def test_broken_oidc_settings_stop_the_app_instead_of_falling_back(missing, caplog):
    at = new_app()
    at.secrets["auth"] = {k: v for k, v in OIDC_SETTINGS.items() if k != missing}
    with caplog.at_level(logging.ERROR, logger="dashboards.access"):
        at.run()
    assert at.title[0].value == "Sign-in is not configured correctly"
    assert missing in at.error[0].value
    assert "does not fall back to local passwords" in at.error[0].value
    assert not at.text_input  # no password form
    assert not at.button
    assert "identity provider settings are broken" in caplog.text


def test_a_tenant_without_a_published_mart_is_told_so(dashboard_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CHARGEBACK_MARTS", str(tmp_path))
    at = signed_in("alice")
    assert at.info[0].value == ("No mart published yet: the data appears after the "
                                "pipeline's next run.")
    assert str(tmp_path) not in _text(at)


def test_a_mart_holding_another_tenant_is_never_shown(dashboard_env, monkeypatch, tmp_path,
                                                      caplog):
    # As if a file had been copied over acme's: zen's mart under acme's name.
    marts = tmp_path / "marts"
    shutil.copytree(dashboard_env / "marts", marts)
    acme = tenant_mart_path(marts, "acme")
    acme.chmod(0o644)
    shutil.copyfile(tenant_mart_path(marts, "zen"), acme)
    monkeypatch.setenv("CHARGEBACK_MARTS", str(marts))
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at = signed_in("alice")
    assert at.error[0].value == "This data is not available. The incident has been logged."
    assert "25,000" not in _text(at)
    assert "isolation check failed" in caplog.text


def test_shifts_show_the_latest_analysis_of_the_own_tenant_only():
    at = signed_in("alice")
    at.switch_page("pages/tenant_insights.py").run()
    assert not at.dataframe  # drawn on request
    at.toggle(key="raw-tables-shown").set_value(True).run()
    shifts, plans, reservations = [d.value for d in at.dataframe]
    # 31 October's analysis, acme's rows
    assert sorted(shifts["level_after"]) == [48.0, 96.0]
    assert list(plans["recommended_plan"]) == ["starter"]
    assert sorted(reservations["hardware_tier"]) == ["economy", "premium", "standard"]
    assert all("tenant" not in frame.columns for frame in (shifts, plans, reservations))
    at = signed_in("oscar")
    at.switch_page("pages/operator_recommendations.py").run()
    shifts, plans, reservations, quotas, *_ = [d.value for d in at.dataframe]
    assert sorted(shifts["tenant"]) == ["acme", "acme", "zen"]
    assert list(plans["recommended_plan"]) == ["starter"]
    assert "current_plan_total" not in plans.columns  # no tenant's bill (docs/dashboards.md)
    assert "expected_monthly_cost_current" not in reservations.columns
    assert list(quotas["outcome"]) == ["dry-run"]


def test_without_a_browser_binding_nobody_can_sign_in():
    # As under a plain `streamlit run dashboards/app.py`, without dashboards/server.py.
    at = new_app({})
    at.run()
    assert "no session binding" in at.error[0].value
    assert not at.text_input


def test_a_session_replayed_from_another_browser_ends(caplog):
    at = signed_in("alice")
    token = at.session_state[gate.AUTH_KEY]
    at.user = dict(BROWSER_B)  # the same Streamlit session, reached from another browser
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at.run()
    assert at.title[0].value == "GPU chargeback"
    assert at.info[0].value == "This session belongs to another browser. Sign in again."
    assert "10,25" not in _text(at)
    assert "session ended: user='alice' reason=OTHER_BROWSER" in caplog.text
    # The record is gone for its own browser too: whoever holds it must sign in again.
    at.user = dict(BROWSER_A)
    at.session_state[gate.AUTH_KEY] = token
    at.run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]


@pytest.mark.parametrize("change", ["role", "password", "removed"])
def test_a_changed_or_removed_user_entry_ends_the_session(change, dashboard_env, monkeypatch,
                                                          tmp_path):
    users_file = tmp_path / "users.yaml"
    shutil.copyfile(dashboard_env / "users.yaml", users_file)
    monkeypatch.setenv("CHARGEBACK_USERS", str(users_file))
    at = signed_in("alice")
    assert at.title[0].value == "Costs and usage"
    users = load_users(users_file)
    alice = users["alice"]
    if change == "removed":
        del users["alice"]
    else:
        users["alice"] = (replace(alice, role=parse_role("tenant:zen")) if change == "role"
                          else replace(alice, password_hash=hash_password(PASSWORD)))
    save_users(users_file, users)
    at.switch_page("pages/tenant_invoices.py").run()  # the next click
    assert at.title[0].value == "GPU chargeback"
    expected = ("Your account has been removed." if change == "removed"
                else "Your account was changed (role or password). Sign in again.")
    assert at.info[0].value == expected
    text = _text(at)
    assert "25,000" not in text
    assert "10,25" not in text


def test_brute_force_locks_the_name_then_the_client(monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr(gate, "LIMITER", SignInLimiter(per_user=5, per_client=8,
                                                       clock=lambda: now[0]))
    at = new_app().run()

    def attempt(name, password):
        at.text_input[0].input(name)
        at.text_input[1].input(password)
        at.button[0].click().run()
        return at.error[0].value if at.error else at.title[0].value

    wrong = "Unknown user name or wrong password."
    locked = ("Too many failed sign-ins for this user name or from this address. "
              "Try again in 15 minutes.")
    for _ in range(5):
        assert attempt("alice", "guess") == wrong
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        # Locked: even the right password is not checked, and says nothing more.
        assert attempt("alice", PASSWORD) == locked
    assert "sign-in refused, locked: user='alice' client=192.0.2.1" in caplog.text
    # A name that does not exist is counted and locked the same way.
    for _ in range(3):
        assert attempt("mallory", "guess") == wrong
    # 8 failures from this address: now every name is locked from here...
    assert attempt("zed", PASSWORD) == locked
    # ...but not from another address, and not after the lockout.
    other = new_app(BROWSER_B).run()
    other.text_input[0].input("zed")
    other.text_input[1].input(PASSWORD)
    other.button[0].click().run()
    assert other.title[0].value == "Costs and usage"
    now[0] += 15 * 60 + 1
    assert attempt("alice", PASSWORD) == "Costs and usage"



def test_an_oidc_session_ends_when_the_users_entry_changes(dashboard_env, monkeypatch,
                                                           tmp_path):
    users_file = tmp_path / "users.yaml"
    shutil.copyfile(dashboard_env / "users.yaml", users_file)
    monkeypatch.setenv("CHARGEBACK_USERS", str(users_file))
    at = new_app()
    at.secrets["auth"] = OIDC_SETTINGS
    at.user = {"is_logged_in": True, "email": OIDC_FINANCE, **BROWSER_A}
    at.run()
    assert at.title[0].value == "Invoices and exports"
    users = load_users(users_file)
    users[OIDC_FINANCE] = replace(users[OIDC_FINANCE], role=parse_role("tenant:zen"))
    save_users(users_file, users)
    at.run()
    # Signed out of the provider's cookie too: the next step is the sign-in button.
    assert _buttons(at) == ["Sign in"]
    assert "25,000" not in _text(at)
    assert at.user.get("is_logged_in") is False
