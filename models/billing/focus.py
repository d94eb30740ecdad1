"""The per-period cost-and-usage export in the FinOps Foundation's FOCUS format (version 1.4).

One row per charge, as FOCUS defines it: on-demand GPU usage per tenant, UTC day, resource (GPU
or MIG instance), hardware tier, size class, model and workload kind; reserved GPUs as
commitment-discount purchases and the usage they covered (or left unused); base fees, true-ups,
credits; adjustment notes issued in the period as corrections of closed periods.

Every figure comes from the stored invoice (models.billing.lifecycle.stored): its lines and
its hourly netting. Nothing is priced or netted here: the netting's on-demand and covered
GPU-hours of each hour, tier and size class are spread over the resources (GPUs, MIG
instances) that used them in proportion to their ledger GPU-hours, and every line's amount over
the rows it pertains to, both with the largest-remainder method (pricing.allocate), so per
tenant and invoice the sum of BilledCost is the invoice total to the cent and the covered
quantities are the invoice's to the 6th decimal. See docs/focus.md for the
column mapping and the decisions taken where the specification leaves a choice."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from models.billing import lifecycle
from models.billing.invoices import DocumentKind, Status, StoredInvoice
from models.billing.pricing import (
    QUANTITY,
    HourUse,
    InvoiceLine,
    LineKind,
    allocate,
)
from models.billing.rate_cards import Reservation, Tenant, month_bounds
from models.files import atomic_open, atomic_write

FOCUS_VERSION = "1.4"
"""The newest released FOCUS version (ratified June 2026; 1.5 is due December 2026)."""

ZERO = Decimal(0)
COST_SCALE = 12
"""Decimal places of money columns: a unit price (6) times a quantity (6) is exact in 12."""
DECIMAL = pa.decimal128(38, COST_SCALE)
DATETIME = pa.timestamp("us", tz="UTC")

GPU_HOURS = "GPU-Hours"
BILLABLE_UNITS = "Normalized GPU-Hours"
"""On-demand pricing unit: overflow GPU-hours times the size class's multiplier."""


@dataclass(frozen=True)
class Provider:
    """Who provides, hosts and invoices the GPUs; one platform plays all three roles."""

    service_provider_name: str = "GPU Platform"
    host_provider_name: str = "GPU Platform"
    invoice_issuer_name: str = "GPU Platform"
    billing_account_id: str = "gpu-platform"
    billing_account_name: str = "GPU Platform"
    service_name: str = "GPU Compute"
    service_category: str = "AI and Machine Learning"
    service_subcategory: str = "AI Platforms"


# (name, FOCUS data type, Arrow type). FOCUS columns first, alphabetically as in the spec's
# column table, then our own x_ columns.
COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("BilledCost", "Decimal", DECIMAL),
    ("BillingAccountId", "String", pa.string()),
    ("BillingAccountName", "String", pa.string()),
    ("BillingCurrency", "String", pa.string()),
    ("BillingPeriodEnd", "Date/Time", DATETIME),
    ("BillingPeriodStart", "Date/Time", DATETIME),
    ("ChargeCategory", "String", pa.string()),
    ("ChargeClass", "String", pa.string()),
    ("ChargeDescription", "String", pa.string()),
    ("ChargeFrequency", "String", pa.string()),
    ("ChargePeriodEnd", "Date/Time", DATETIME),
    ("ChargePeriodStart", "Date/Time", DATETIME),
    ("CommitmentDiscountCategory", "String", pa.string()),
    ("CommitmentDiscountId", "String", pa.string()),
    ("CommitmentDiscountName", "String", pa.string()),
    ("CommitmentDiscountQuantity", "Decimal", DECIMAL),
    ("CommitmentDiscountStatus", "String", pa.string()),
    ("CommitmentDiscountType", "String", pa.string()),
    ("CommitmentDiscountUnit", "String", pa.string()),
    ("ConsumedQuantity", "Decimal", DECIMAL),
    ("ConsumedUnit", "String", pa.string()),
    ("ContractedCost", "Decimal", DECIMAL),
    ("ContractedUnitPrice", "Decimal", DECIMAL),
    ("EffectiveCost", "Decimal", DECIMAL),
    ("HostProviderName", "String", pa.string()),
    ("InvoiceDetailId", "String", pa.string()),
    ("InvoiceId", "String", pa.string()),
    ("InvoiceIssuerName", "String", pa.string()),
    ("ListCost", "Decimal", DECIMAL),
    ("ListUnitPrice", "Decimal", DECIMAL),
    ("PricingCategory", "String", pa.string()),
    ("PricingQuantity", "Decimal", DECIMAL),
    ("PricingUnit", "String", pa.string()),
    ("ResourceId", "String", pa.string()),
    ("ResourceName", "String", pa.string()),
    ("ResourceType", "String", pa.string()),
    ("ServiceCategory", "String", pa.string()),
    ("ServiceName", "String", pa.string()),
    ("ServiceProviderName", "String", pa.string()),
    ("ServiceSubcategory", "String", pa.string()),
    ("SkuId", "String", pa.string()),
    ("SkuMeter", "String", pa.string()),
    ("SkuPriceDetails", "JSON", pa.string()),
    ("SkuPriceId", "String", pa.string()),
    ("SubAccountId", "String", pa.string()),
    ("SubAccountName", "String", pa.string()),
    ("x_Adjusts", "String", pa.string()),
    ("x_Cluster", "String", pa.string()),
    ("x_GpuProduct", "String", pa.string()),
    ("x_GpuSeconds", "Decimal", DECIMAL),
    ("x_HardwareTier", "String", pa.string()),
    ("x_InvoiceKind", "String", pa.string()),
    ("x_InvoiceLineKind", "String", pa.string()),
    ("x_InvoiceStatus", "String", pa.string()),
    ("x_MeteringBasis", "String", pa.string()),
    ("x_MigProfile", "String", pa.string()),
    ("x_Model", "String", pa.string()),
    ("x_ModelSizeClass", "String", pa.string()),
    ("x_Node", "String", pa.string()),
    ("x_RateCardVersion", "String", pa.string()),
    ("x_SizeMultiplier", "Decimal", DECIMAL),
    ("x_WorkloadKind", "String", pa.string()),
)
SCHEMA = pa.schema([pa.field(name, arrow) for name, _, arrow in COLUMNS])
DECIMAL_COLUMNS = frozenset(name for name, kind, _ in COLUMNS if kind == "Decimal")
DATETIME_COLUMNS = frozenset(name for name, kind, _ in COLUMNS if kind == "Date/Time")

# Invoice line kinds of an adjustment note -> the FOCUS charge category of the correction.
CORRECTION_CATEGORY = {
    LineKind.USAGE: "Usage", LineKind.DISCOUNT: "Usage", LineKind.BAND_FEE: "Adjustment",
    LineKind.RESERVATION: "Purchase", LineKind.BASE_FEE: "Purchase",
    LineKind.TRUE_UP: "Adjustment", LineKind.CREDIT: "Credit",
}


@dataclass
class _Usage:
    """GPU-hours of one tenant for one UTC day, resource, tier, size class, model and kind,
    with its share of the invoice's netting."""

    day: datetime
    cluster: str
    node: str
    gpu_uuid: str
    gpu_product: str
    mig_profile: str | None
    tier: str
    size: str
    model: str | None
    kind: str
    on_demand: Decimal = ZERO
    """GPU-hours billed on demand, at 6 decimals."""
    covered: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    """GPU-hours covered per reservation id, at 6 decimals."""


def focus_table(
    con: duckdb.DuckDBPyConnection,
    period: str,
    *,
    tenants: Mapping[str, Tenant],
    provider: Provider | None = None,
) -> pa.Table:
    """The FOCUS rows of billing period `period` (YYYY-MM): every draft or final invoice of
    the period, and every adjustment note finalized during it (as corrections).

    `tenants` gives each tenant's display name (SubAccountName)."""
    provider = provider or Provider()
    start, end = month_bounds(period)
    documents = sorted(
        [*(s for s in lifecycle.stored(con, period, with_hours=True)
           if s.kind is DocumentKind.INVOICE),
         *(s for s in lifecycle.stored(con, status=Status.FINAL, finalized_in=(start, end))
           if s.kind is DocumentKind.ADJUSTMENT)],
        key=lambda s: s.invoice_id)
    rows: list[dict[str, Any]] = []
    for stored in documents:
        tenant = tenants.get(stored.invoice.tenant)
        if tenant is None:
            raise ValueError(
                f"invoice {stored.invoice_id}: tenant {stored.invoice.tenant!r} is missing from "
                "the tenants configuration; the FOCUS export needs its name")
        common = _common(stored, provider, tenant, start, end)
        if stored.kind is DocumentKind.ADJUSTMENT:
            rows += _correction_rows(stored, common)
        else:
            rows += _invoice_rows(con, stored, common, start, end)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _common(stored: StoredInvoice, provider: Provider, tenant: Tenant, start: datetime,
            end: datetime) -> dict[str, Any]:
    invoice = stored.invoice
    return {
        "BillingAccountId": provider.billing_account_id,
        "BillingAccountName": provider.billing_account_name,
        "BillingCurrency": invoice.currency,
        "BillingPeriodStart": start,
        "BillingPeriodEnd": end,
        "HostProviderName": provider.host_provider_name,
        "InvoiceId": stored.invoice_id,
        "InvoiceIssuerName": provider.invoice_issuer_name,
        "ServiceCategory": provider.service_category,
        "ServiceName": provider.service_name,
        "ServiceProviderName": provider.service_provider_name,
        "ServiceSubcategory": provider.service_subcategory,
        "SubAccountId": tenant.name,
        "SubAccountName": tenant.display_name or tenant.name,
        "x_Adjusts": stored.adjusts,
        "x_InvoiceKind": stored.kind.value,
        "x_InvoiceStatus": stored.status.value,
        "x_MeteringBasis": invoice.basis,
        "x_RateCardVersion": invoice.rate_card_version,
    }


def _standalone(common: Mapping[str, Any], line_no: int, line: InvoiceLine,
                category: str, frequency: str, start: datetime, end: datetime,
                **extra: Any) -> dict[str, Any]:
    """A charge unrelated to other charges and without a SKU price: all costs equal."""
    return dict(
        common, ChargeCategory=category, ChargeFrequency=frequency,
        ChargeDescription=line.description, ChargePeriodStart=start, ChargePeriodEnd=end,
        BilledCost=line.amount, EffectiveCost=line.amount, ListCost=line.amount,
        ContractedCost=line.amount, InvoiceDetailId=f"{common['InvoiceId']}#{line_no}",
        x_InvoiceLineKind=line.kind.value, x_HardwareTier=line.hardware_tier, **extra)


def _invoice_rows(con: duckdb.DuckDBPyConnection, stored: StoredInvoice,
                  common: Mapping[str, Any], start: datetime, end: datetime
                  ) -> list[dict[str, Any]]:
    invoice = stored.invoice
    lines = list(enumerate(invoice.lines, start=1))
    out: list[dict[str, Any]] = []
    usage = _resource_usage(con, stored, start, end)

    # Reserved GPUs: the purchase, and its cost amortized over the hours it covered or not.
    for line_no, line in lines:
        if line.kind is LineKind.RESERVATION:
            out += _reservation_rows(common, stored, line_no, line, usage)

    # On-demand usage: netted GPU-hours per row, units per band, amounts per line, then the
    # discount.
    on_demand = _on_demand_rows(common, stored, lines, usage)
    band_fees = [
        _standalone(common, n, x, "Adjustment", "One-Time", start, end, SkuId=x.hardware_tier)
        for n, x in lines if x.kind is LineKind.BAND_FEE
    ]
    discount = sum((x.amount for _, x in lines if x.kind is LineKind.DISCOUNT), ZERO)
    if discount:
        discounted = on_demand + band_fees
        shares = allocate(discount, [abs(r["BilledCost"]) for r in discounted], invoice.quantum)
        for row, share in zip(discounted, shares, strict=True):
            row["BilledCost"] += share
            row["EffectiveCost"] = row["BilledCost"]
            if row["ChargeCategory"] == "Adjustment":
                row["ListCost"] = row["ContractedCost"] = row["BilledCost"]
    out += [r for r in on_demand if r["PricingQuantity"] or r["BilledCost"]]
    out += band_fees

    for n, line in lines:
        if line.kind is LineKind.BASE_FEE:
            price, qty = line.unit_price, line.quantity
            out.append(dict(
                _standalone(common, n, line, "Purchase", "Recurring", start, end),
                SkuId=f"plan/{invoice.plan}", SkuPriceId=f"plan/{invoice.plan}/base-fee",
                SkuMeter="Plan base fee", PricingCategory="Standard", PricingQuantity=qty,
                PricingUnit="Months", ListUnitPrice=price, ContractedUnitPrice=price,
                ListCost=price * qty, ContractedCost=price * qty,
                SkuPriceDetails=json.dumps({"x_Plan": invoice.plan})))
        elif line.kind is LineKind.TRUE_UP:
            out.append(_standalone(common, n, line, "Adjustment", "One-Time", start, end))
        elif line.kind is LineKind.CREDIT:
            out.append(_standalone(common, n, line, "Credit", "One-Time", start, end))
    return out


def _resource_usage(con: duckdb.DuckDBPyConnection, stored: StoredInvoice, start: datetime,
                    end: datetime) -> list[_Usage]:
    """Daily usage rows of the invoice's tenant per resource, each with its share of the
    invoice's netting: every on-demand or covered cell of an hour, tier and size class spread
    over that hour's ledger rows in proportion to their GPU-hours."""
    invoice = stored.invoice
    column = "used_gpu_seconds" if invoice.basis == "usage" else "allocated_gpu_seconds"
    # Grouping happens in DuckDB, so a month of raw samples never comes into memory.
    hourly = con.execute(
        f"SELECT date_trunc('hour', window_start) AS hour, cluster, node, gpu_uuid, "
        f"gpu_product, mig_profile, hardware_tier, size_class, model, workload_kind, "
        f"sum({column}::DECIMAL(38, 6)) FROM ledger "
        "WHERE tenant = ? AND window_start >= ? AND window_start < ? "
        f"GROUP BY ALL HAVING sum({column}) > 0 ORDER BY ALL",
        [invoice.tenant, start, end],
    ).fetchall()
    rows: dict[tuple[Any, ...], _Usage] = {}
    sharing: dict[tuple[datetime, str, str], list[tuple[_Usage, Decimal]]] = defaultdict(list)
    for hour, cluster, node, uuid, product, mig, tier, size, model, kind, seconds in hourly:
        day = hour.replace(hour=0)
        key = (day, cluster, node, uuid, product, mig, tier, size, model, kind)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _Usage(day.astimezone(UTC), cluster, node, uuid, product, mig,
                                     tier, size, model, kind)
        sharing[(hour, tier, size)].append((row, Decimal(seconds)))
    for cell in invoice.hours:
        if cell.use is HourUse.UNUSED or cell.size_class is None:
            continue
        members = sharing.get((cell.hour, cell.hardware_tier, cell.size_class))
        if not members:
            raise ValueError(
                f"invoice {stored.invoice_id}: {cell.gpu_hours} {cell.hardware_tier}/"
                f"{cell.size_class} GPU-hours netted at {cell.hour:%Y-%m-%d %H:%M}Z, but the "
                "ledger has no such usage any more; re-run tenant_bills before exporting")
        shares = allocate(cell.gpu_hours, [seconds for _, seconds in members], QUANTITY)
        for (row, _), share in zip(members, shares, strict=True):
            if cell.use is HourUse.ON_DEMAND:
                row.on_demand += share
            elif cell.reservation_id is not None:
                row.covered[cell.reservation_id] += share
    return list(rows.values())


def _resource(common: Mapping[str, Any], u: _Usage) -> dict[str, Any]:
    return dict(
        common, ResourceId=u.gpu_uuid,
        ResourceName=f"{u.node}/{u.gpu_uuid}" + (f" ({u.mig_profile})" if u.mig_profile else ""),
        ResourceType="MIG Instance" if u.mig_profile else "GPU",
        ChargePeriodStart=u.day, ChargePeriodEnd=u.day + timedelta(days=1),
        SkuId=u.tier, x_Cluster=u.cluster, x_Node=u.node, x_GpuProduct=u.gpu_product,
        x_MigProfile=u.mig_profile, x_HardwareTier=u.tier, x_ModelSizeClass=u.size,
        x_Model=u.model, x_WorkloadKind=u.kind)


def _commitment(reservation_id: str, r: Reservation) -> dict[str, Any]:
    return {
        "CommitmentDiscountId": reservation_id, "CommitmentDiscountCategory": "Usage",
        "CommitmentDiscountType": "Reserved GPU",
        "CommitmentDiscountName": f"{r.gpus} reserved {r.tier} GPUs from "
                                  f"{r.start:%Y-%m-%d %H:%M}Z",
    }


def _reservation_rows(common: Mapping[str, Any], stored: StoredInvoice, line_no: int,
                      line: InvoiceLine, usage: Sequence[_Usage]) -> list[dict[str, Any]]:
    invoice = stored.invoice
    start, end = common["BillingPeriodStart"], common["BillingPeriodEnd"]
    rid = line.reservation_id
    assert rid is not None, "pricing names the reservation of every reservation line"
    r = invoice.reservation(rid)
    price, qty, amount = line.unit_price, line.quantity, line.amount
    commitment = {
        **_commitment(rid, r), "CommitmentDiscountUnit": GPU_HOURS,
        "SkuId": r.tier, "SkuPriceId": f"{r.tier}/reserved", "SkuMeter": "Reserved GPU",
        "SkuPriceDetails": json.dumps({"x_HardwareTier": r.tier, "x_Reserved": True}),
        "ListUnitPrice": price, "ContractedUnitPrice": price, "PricingUnit": GPU_HOURS,
        "x_HardwareTier": r.tier, "InvoiceDetailId": f"{common['InvoiceId']}#{line_no}",
        "x_InvoiceLineKind": line.kind.value,
    }
    rows = [dict(
        common, **commitment, ChargeCategory="Purchase", ChargeFrequency="Recurring",
        ChargeDescription=line.description, ChargePeriodStart=start, ChargePeriodEnd=end,
        PricingCategory="Standard", PricingQuantity=qty, CommitmentDiscountQuantity=qty,
        BilledCost=amount, EffectiveCost=ZERO, ListCost=price * qty, ContractedCost=price * qty)]

    # The netting says, hour by hour, what the reservation covered and what it left unused;
    # together they are the quantity its line charges.
    unused_by_day: dict[datetime, Decimal] = defaultdict(lambda: ZERO)
    for cell in invoice.hours:
        if cell.use is HourUse.UNUSED and cell.reservation_id == rid:
            unused_by_day[cell.hour.replace(hour=0).astimezone(UTC)] += cell.gpu_hours
    used_rows = [u for u in usage if u.covered.get(rid)]
    unused_days = sorted(unused_by_day)
    quantities = ([u.covered[rid] for u in used_rows]
                  + [unused_by_day[d] for d in unused_days])
    if sum(quantities, ZERO) != qty:
        raise ValueError(
            f"invoice {stored.invoice_id}: reservation {rid}: the stored netting holds "
            f"{sum(quantities, ZERO)} GPU-hours, the reservation line {qty}; re-run "
            "tenant_bills")
    costs = allocate(amount, quantities, invoice.quantum)
    for i, u in enumerate(used_rows):
        q = quantities[i]
        rows.append(dict(
            _resource(common, u), **commitment, ChargeCategory="Usage",
            ChargeFrequency="Usage-Based", CommitmentDiscountStatus="Used",
            ChargeDescription=f"{r.tier} GPU usage covered by reservation {rid}",
            PricingCategory="Committed", PricingQuantity=q, ConsumedQuantity=q,
            ConsumedUnit=GPU_HOURS, CommitmentDiscountQuantity=q, BilledCost=ZERO,
            EffectiveCost=costs[i], ListCost=price * q, ContractedCost=price * q,
            x_GpuSeconds=_seconds(q)))
    for j, day in enumerate(unused_days, start=len(used_rows)):
        q = quantities[j]
        rows.append(dict(
            common, **commitment, ChargeCategory="Usage", ChargeFrequency="Usage-Based",
            CommitmentDiscountStatus="Unused",
            ChargeDescription=f"unused hours of reservation {rid}",
            ChargePeriodStart=day, ChargePeriodEnd=day + timedelta(days=1),
            PricingCategory="Committed", PricingQuantity=q, CommitmentDiscountQuantity=q,
            BilledCost=ZERO, EffectiveCost=costs[j], ListCost=price * q,
            ContractedCost=price * q))
    return rows


def _seconds(gpu_hours: Decimal) -> Decimal:
    return (gpu_hours * 3600).quantize(QUANTITY)


def _on_demand_rows(common: Mapping[str, Any], stored: StoredInvoice,
                    lines: Sequence[tuple[int, InvoiceLine]], usage: Sequence[_Usage]
                    ) -> list[dict[str, Any]]:
    invoice = stored.invoice
    discount_factor = invoice.discount_factor
    out: list[dict[str, Any]] = []
    by_tier: dict[str, list[tuple[_Usage, Decimal, Decimal]]] = defaultdict(list)
    for tier_usage in invoice.usage:
        tier, size = tier_usage.hardware_tier, tier_usage.size_class
        rows = sorted((u for u in usage if u.tier == tier and u.size == size), key=_order)
        try:
            units = allocate(tier_usage.billable_units, [u.on_demand for u in rows], QUANTITY)
        except ValueError as error:
            raise ValueError(
                f"invoice {stored.invoice_id}: {tier}/{size}: the ledger no longer matches the "
                f"invoice's usage ({error}); re-run tenant_bills before exporting") from None
        by_tier[tier] += [(u, u.on_demand, n) for u, n in zip(rows, units, strict=True)
                          if u.on_demand or n]
    for tier, pieces_in in by_tier.items():
        pieces_in.sort(key=lambda p: _order(p[0]))
        bands = [(n, x) for n, x in lines
                 if x.kind is LineKind.USAGE and x.hardware_tier == tier]
        # Graduated bands fill in time order: the month's first units are the first band's.
        remaining = [x.quantity for _, x in bands]
        if sum(remaining, ZERO) != sum((p[2] for p in pieces_in), ZERO):
            raise ValueError(f"invoice {stored.invoice_id}: {tier}: band quantities do not add "
                             "up to the usage's billable units")
        pieces: list[tuple[_Usage, Decimal, Decimal, int]] = []
        band = 0
        for u, consumed_q, units_q in pieces_in:
            left = units_q
            parts: list[tuple[Decimal, int]] = []
            while left > 0:
                while remaining[band] == 0:
                    band += 1
                take = min(left, remaining[band])
                parts.append((take, band))
                remaining[band] -= take
                left -= take
            split = allocate(consumed_q, [p[0] for p in parts], QUANTITY) if parts else []
            if not parts:
                pieces.append((u, consumed_q, ZERO, band))
            pieces += [(u, c, q, b) for (q, b), c in zip(parts, split, strict=True)]
        for b, (line_no, line) in enumerate(bands):
            members = [p for p in pieces if p[3] == b]
            amounts = allocate(line.amount, [p[2] for p in members], invoice.quantum)
            price = line.unit_price
            contracted = price * discount_factor
            assert line.band is not None, "pricing names the band of every usage line"
            mode, number = line.band.mode.value, line.band.number
            sku_price = f"{tier}/{mode}" + (f"/band-{number}" if number else "")
            for (u, c, q, _), amount in zip(members, amounts, strict=True):
                multiplier = next(t.multiplier for t in invoice.usage
                                  if t.hardware_tier == u.tier and t.size_class == u.size)
                out.append(dict(
                    _resource(common, u), ChargeCategory="Usage", ChargeFrequency="Usage-Based",
                    ChargeDescription=f"{u.tier} on-demand GPU usage ({line.description}), "
                                      f"{u.model or 'unknown model'} ({u.size})",
                    SkuPriceId=sku_price, SkuMeter="On-demand GPU",
                    SkuPriceDetails=json.dumps({"x_HardwareTier": tier, "x_PricingMode": mode,
                                                "x_Band": number}),
                    PricingCategory="Standard", PricingQuantity=q, PricingUnit=BILLABLE_UNITS,
                    ConsumedQuantity=c, ConsumedUnit=GPU_HOURS, ListUnitPrice=price,
                    ContractedUnitPrice=contracted, ListCost=price * q,
                    ContractedCost=contracted * q, BilledCost=amount, EffectiveCost=amount,
                    InvoiceDetailId=f"{stored.invoice_id}#{line_no}", x_InvoiceLineKind="usage",
                    x_GpuSeconds=_seconds(c), x_SizeMultiplier=multiplier))
    return out


def _order(u: _Usage) -> tuple[Any, ...]:
    return (u.day, u.size, u.cluster, u.node, u.gpu_uuid, u.model or "", u.kind)


def _correction_rows(stored: StoredInvoice, common: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An adjustment note's delta lines, as corrections of the closed period they change."""
    note = stored.invoice
    lo, hi = month_bounds(note.period)
    out = []
    for n, line in enumerate(note.lines, start=1):
        category = CORRECTION_CATEGORY[line.kind]
        extra: dict[str, Any] = {"ChargeClass": "Correction", "SkuId": line.hardware_tier}
        if line.reservation_id is not None:
            extra.update(_commitment(line.reservation_id,
                                     note.reservation(line.reservation_id)))
        frequency = {"Usage": "Usage-Based", "Purchase": "Recurring"}.get(category, "One-Time")
        out.append(dict(_standalone(common, n, line, category, frequency, lo, hi, **extra),
                        InvoiceDetailId=f"{stored.number}#{n}"))
    return out


def metadata(table: pa.Table, period: str, created: datetime) -> dict[str, Any]:
    """FOCUS metadata: the schema of the export, with the FOCUS version it conforms to."""
    definitions = []
    for name, kind, arrow in COLUMNS:
        entry: dict[str, Any] = {"ColumnName": name, "DataType": kind.upper()}
        if kind == "Decimal":
            assert isinstance(arrow, pa.Decimal128Type)
            entry.update(NumberPrecision=arrow.precision, NumberScale=arrow.scale)
        elif kind in {"String", "JSON"}:
            entry.update(StringEncoding="UTF-8")
        definitions.append(entry)
    schema_id = hashlib.sha256(json.dumps(definitions).encode()).hexdigest()[:32]
    return {
        "FocusVersion": FOCUS_VERSION,
        "DatasetInstance": "CostAndUsage",
        "DataGenerator": "gpu-chargeback",
        "BillingPeriod": period,
        "Rows": table.num_rows,
        "Schema": {
            "SchemaId": schema_id,
            "FocusVersion": FOCUS_VERSION,
            "CreationDate": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ColumnDefinition": definitions,
        },
    }


def csv_text(table: pa.Table) -> str:
    """The table as CSV: datetimes ISO 8601 UTC with Z, decimals exact, nulls empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([_csv_value(name, row[name]) for name in table.column_names])
    return out.getvalue()


def _csv_value(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in {"-0", "0"} else text
    return str(value)


def write_focus_export(
    con: duckdb.DuckDBPyConnection,
    period: str,
    folder: Path,
    *,
    tenants: Mapping[str, Tenant],
    provider: Provider | None = None,
    created: datetime | None = None,
) -> list[Path]:
    """folder/focus.parquet, folder/focus.csv and folder/focus.metadata.json, each written
    atomically (temporary file, then rename)."""
    table = focus_table(con, period, tenants=tenants, provider=provider)
    meta = metadata(table, period, created or datetime.now(UTC))
    meta_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    parquet = folder / "focus.parquet"
    with atomic_open(parquet) as handle:
        pq.write_table(table.replace_schema_metadata({
            "focus_version": FOCUS_VERSION, "focus_metadata": json.dumps(meta)}),
            handle, compression="zstd")
    return [parquet, atomic_write(folder / "focus.csv", csv_text(table)),
            atomic_write(folder / "focus.metadata.json", meta_text)]
