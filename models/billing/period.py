"""A month's invoices from the warehouse: which tenants are billed, each priced once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

import duckdb

from models.billing.pricing import Invoice
from models.billing.pricing_sql import price_all
from models.billing.rate_cards import Meter, RateCard, Tenant, month_bounds
from models.errors import UserError
from models.ledger import warehouse


class UnknownTenants(UserError):
    """Usage of tenants the tenants file does not define: it cannot be priced."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(", ".join(names))


def price_period(
    con: duckdb.DuckDBPyConnection,
    card: RateCard,
    tenants: Mapping[str, Tenant],
    period: str,
    *,
    credit_available: Callable[[Tenant], Decimal] | None = None,
) -> list[Invoice]:
    """Invoices of every tenant active in `period` or with usage in it, in tenant order,
    priced all at once by the set-wise engine (models.billing.pricing_sql).

    `credit_available(tenant)` gives the prepaid balance at the period's start (default: every
    grant before the period ends). A tenant with nothing to bill (no usage, no fees) gets no
    empty invoice."""
    start, end = month_bounds(period)
    billed = set(warehouse.billable_tenants(con, start, end))
    unknown = sorted(billed - set(tenants))
    if unknown:
        raise UnknownTenants(unknown)
    priced = {
        name: tenant for name, tenant in sorted(tenants.items())
        if name in billed or (tenant.start < end and (tenant.end is None or tenant.end > start))
    }
    token_models = {name: list(card.token_prices) for name, tenant in priced.items()
                    if (plan := card.plans.get(tenant.plan)) and plan.meter is Meter.TOKENS}
    work = warehouse.model_work(con, priced, start, end)
    credits = ({name: credit_available(tenant) for name, tenant in priced.items()}
               if credit_available else None)
    try:
        warehouse.create_usage_micro(con, USAGE_TABLE, priced, start, end, token_models)
        month = price_all(con, card, priced, period, USAGE_TABLE, credit_available=credits,
                          work=work)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {USAGE_TABLE}")
    return [invoice for invoice in month.invoices.values() if invoice.lines]


USAGE_TABLE = "billing_usage_micro"
"""The temporary table of the period's billable usage that `price_period` prices."""
