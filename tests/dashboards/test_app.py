"""Every page for every role, sign-in, and every way a tenant might reach another tenant,
through streamlit.testing.v1.AppTest (the real app script, no browser)."""

import logging
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import gate
from dashboards.routes import PAGES
from models.marts import tenant_mart_path
from tests.dashboards.conftest import OIDC_FINANCE, PASSWORD
from tests.dashboards.demo_warehouse import EVIL, TOTALS

APP = str(Path(gate.__file__).with_name("app.py"))
PAGE_FILES = {kind: [path for path, *_ in pages] for kind, pages in PAGES.items()}


def _text(at: AppTest) -> str:
    """Everything the run put on screen that a person could read."""
    parts = [str(e.value) for kind in ("title", "header", "subheader", "markdown", "caption",
                                       "metric", "info", "error", "selectbox")
             for e in getattr(at, kind)]
    parts += [e.label for e in at.metric]
    parts += [e.value.to_string() for e in at.dataframe]
    parts += [str(o) for s in at.selectbox for o in s.options]
    return "\n".join(parts)


def signed_in(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(name)
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    return at


@pytest.fixture(autouse=True)
def _env(dashboard_env):
    return dashboard_env


def test_sign_in_form_and_wrong_password(caplog):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert at.title[0].value == "GPU chargeback"
    assert "10,25" not in _text(at)
    at.text_input[0].input("alice")
    at.text_input[1].input("not the password")
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at.button[0].click().run()
    assert at.error[0].value == "Unknown user name or wrong password."
    assert "failed sign-in: user='alice'" in caplog.text
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
    # cost and GPU-hours by day; GPU-hours by model, size class and tier
    assert len(at.get("vega_lite_chart")) == 5
    at.switch_page("pages/tenant_invoices.py").run()
    assert f"{float(TOTALS['acme']):,.2f}" in _text(at)


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
    for tenant, total in TOTALS.items():
        assert tenant in text
        assert f"{float(total):,.2f}" in text
    assert "adjusted" in text
    assert "ADJ-2026-10-acme-1" in text


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


def test_a_forged_sign_in_is_denied_and_logged(caplog):
    at = signed_in("alice")
    at.session_state[gate.AUTH_KEY] = {"user": "zed", "mac": "0" * 64}
    with caplog.at_level(logging.WARNING, logger="dashboards.access"):
        at.run()
    assert at.title[0].value == "Access denied"
    assert "25,000" not in _text(at)
    assert "attempted='zed'" in caplog.text
    at.run()  # the forged entry is gone: back to the sign-in form
    assert at.title[0].value == "GPU chargeback"


def test_pages_of_other_roles_have_no_route_and_refuse_to_run():
    at = signed_in("alice")
    with pytest.raises(ValueError, match="registered"):
        at.switch_page("pages/finance_invoices.py")
    # Run on its own (as if routed to), a finance page still checks the role itself.
    page = AppTest.from_file(str(Path(APP).with_name("pages") / "finance_invoices.py"),
                             default_timeout=30)
    page.session_state[gate.AUTH_KEY] = {"user": "alice", "mac": gate._seal("alice")}
    page.run()
    assert page.title[0].value == "Access denied"
    assert "ADJ-" not in _text(page)


def test_oidc_maps_the_email_to_a_role():
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:1/oauth2callback",
                          "cookie_secret": "x", "client_id": "x", "client_secret": "x",
                          "server_metadata_url": "http://127.0.0.1:1/.well-known"}
    at.user = {"is_logged_in": False}
    at.run()
    assert [b.label for b in at.button] == ["Sign in"]
    at.user = {"is_logged_in": True, "email": OIDC_FINANCE.upper()}
    at.run()
    assert at.title[0].value == "Invoices and exports"
    at.user = {"is_logged_in": True, "email": "stranger@example.com"}
    at.run()
    assert at.title[0].value == "Access denied"


def test_a_tenant_without_a_published_mart_is_told_so(dashboard_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CHARGEBACK_MARTS", str(tmp_path))
    at = signed_in("alice")
    assert "no mart published yet" in at.info[0].value


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
    (shifts,) = [d.value for d in at.dataframe]
    assert list(shifts["level_after"]) == [96.0]  # 31 October's analysis, acme's row
    assert "tenant" not in shifts.columns
    at = signed_in("oscar")
    at.switch_page("pages/operator_recommendations.py").run()
    frames = [d.value for d in at.dataframe]
    assert sorted(frames[0]["tenant"]) == ["acme", "zen"]
    assert list(frames[1]["outcome"]) == ["dry-run"]
