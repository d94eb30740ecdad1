import pytest

from tests.models.billing.engines import price_both


@pytest.fixture(autouse=True)
def _both_engines(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example of these tests that calls `price_invoice` also prices through the
    set-wise engine and checks it gives the same invoice (models.billing.pricing_sql). The
    hypothesis properties of the Decimal engine are left to it alone: the engines' agreement
    on random input is test_pricing_sql's."""
    if (hasattr(request.module, "price_invoice")
            and not request.module.__name__.endswith("test_pricing_properties")):
        monkeypatch.setattr(request.module, "price_invoice", price_both)
