"""The finance data-quality page lists the spool files the ingest set aside."""

import pytest

from tests.dashboards.demo_warehouse import QUARANTINED_FILE
from tests.dashboards.test_app import _text, signed_in


@pytest.fixture(autouse=True)
def _env(dashboard_env):
    return dashboard_env


def test_quarantined_spool_files_are_shown_to_finance():
    at = signed_in("fiona").switch_page("pages/finance_quality.py").run()
    assert not at.exception
    text = _text(at)
    assert "Spool files set aside" in text
    assert "1 spool file(s) could not be read" in at.warning[0].value
    assert QUARANTINED_FILE in text
    assert "Parquet magic bytes not found in footer" in text
