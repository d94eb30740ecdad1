"""Both pricing engines on the same input: `models.billing.pricing.price_invoice` (the
oracle) and the set-wise `models.billing.pricing_sql.price_all`, over a real DuckDB table."""

from collections.abc import Iterable, Mapping
from decimal import Decimal

import duckdb
import pyarrow as pa

from models.billing.invoices import canonical_json, document
from models.billing.pricing import Invoice, ModelWork, UsageHour, price_invoice, quantity
from models.billing.pricing_sql import PricedMonth, price_all
from models.billing.rate_cards import RateCard, Tenant


def usage_table(rows: Mapping[str, Iterable[UsageHour]]) -> pa.Table:
    flat = [(name, row) for name, usage in rows.items() for row in usage]
    return pa.table({
        "tenant": pa.array([name for name, _ in flat], pa.string()),
        "hour": pa.array([row.hour for _, row in flat], pa.timestamp("us", tz="UTC")),
        "hardware_tier": pa.array([row.hardware_tier for _, row in flat], pa.string()),
        "size_class": pa.array([row.size_class for _, row in flat], pa.string()),
        "gpu_hours_micro": pa.array([int(quantity(row.gpu_hours).scaleb(6)) for _, row in flat],
                                    pa.int64()),
    })


def price_set_wise(card: RateCard, tenants: Mapping[str, Tenant], period: str,
                   usage: Mapping[str, Iterable[UsageHour]], *,
                   credit_available: Mapping[str, Decimal] | None = None,
                   work: Mapping[str, Iterable[ModelWork]] | None = None) -> PricedMonth:
    con = duckdb.connect()
    try:
        con.register("usage_rows", usage_table(usage))
        return price_all(con, card, tenants, period, "usage_rows",
                         credit_available=credit_available, work=work)
    finally:
        con.close()


def assert_same(expected: Invoice, got: Invoice) -> None:
    """The same invoice to the byte: its document, every line and the netting cell by cell."""
    assert canonical_json(document(got)) == canonical_json(document(expected))
    assert got.lines == expected.lines
    assert got.usage == expected.usage
    assert got.tokens == expected.tokens
    assert tuple(got.hours) == tuple(expected.hours)
    assert got == expected


def price_both(tenant: Tenant, card: RateCard, period: str, usage: Iterable[UsageHour], *,
               credit_available: Decimal | None = None, work: Iterable[ModelWork] = ()
               ) -> Invoice:
    """`price_invoice`'s invoice, after checking the set-wise engine gives the same one (or
    refuses the input the same way)."""
    usage, work = list(usage), list(work)
    try:
        expected = price_invoice(tenant, card, period, usage,
                                 credit_available=credit_available, work=work)
    except Exception as error:
        try:
            price_set_wise(card, {tenant.name: tenant}, period, {tenant.name: usage},
                           credit_available=None if credit_available is None
                           else {tenant.name: credit_available}, work={tenant.name: work})
        except type(error):
            raise error from None
        raise AssertionError(f"the set-wise engine priced what price_invoice refused: "
                             f"{error}") from error
    month = price_set_wise(card, {tenant.name: tenant}, period, {tenant.name: usage},
                           credit_available=None if credit_available is None
                           else {tenant.name: credit_available}, work={tenant.name: work})
    assert_same(expected, month.invoices[tenant.name])
    return expected
