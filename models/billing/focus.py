"""The per-period cost-and-usage export in the FinOps Foundation's FOCUS format (version 1.4).

One row per charge, as FOCUS defines it: on-demand GPU usage per tenant, UTC day, resource (GPU
or MIG instance), hardware tier, size class, model and workload kind; reserved GPUs as
commitment-discount purchases and the usage they covered (or left unused); base fees, true-ups,
credits; adjustment notes issued in the period as corrections of closed periods.

Money ties to the invoices exactly: every invoice line's amount is spread over the rows it
pertains to with the largest-remainder method at the currency's minor unit, so per tenant and
invoice the sum of BilledCost is the invoice total to the cent. See docs/focus.md for the
column mapping and the decisions taken where the specification leaves a choice."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
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

from models.billing.pricing import QUANTITY, active_hours
from models.billing.rate_cards import Reservation, Tenant, month_bounds

FOCUS_VERSION = "1.4"
"""The newest released FOCUS version (ratified June 2026; 1.5 is due December 2026)."""

HOUR = timedelta(hours=1)
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
    "usage": "Usage", "discount": "Usage", "band_fee": "Adjustment", "reservation": "Purchase",
    "base_fee": "Purchase", "true_up": "Adjustment", "credit": "Credit",
}
_BAND = re.compile(r"^(flat|volume|graduated)(?: band (\d+))?")


def allocate(total: Decimal, weights: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """`total` split over `weights` in multiples of `quantum`, summing to `total` exactly.

    Largest remainder: every share is floored, the leftover quanta go to the largest
    fractional parts (ties to the earlier weight)."""
    if not weights:
        if total:
            raise ValueError(f"cannot allocate {total} over no rows")
        return []
    steps = total / quantum
    if steps != steps.to_integral_value():
        raise ValueError(f"{total} is not a multiple of {quantum}")
    sign, count = (-1, -int(steps)) if steps < 0 else (1, int(steps))
    weight_sum = sum(weights, ZERO)
    if weight_sum <= 0:
        if count:
            raise ValueError(f"cannot allocate {total} over rows that all weigh zero")
        return [ZERO for _ in weights]
    if any(w < 0 for w in weights):
        raise ValueError("allocation weights must not be negative")
    exact = [count * w / weight_sum for w in weights]
    floors = [int(e) for e in exact]
    leftover = count - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    return [sign * n * quantum for n in floors]


@dataclass
class _Usage:
    """GPU-hours of one tenant for one UTC day, resource, tier, size class, model and kind."""

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
    gpu_seconds: Decimal = ZERO
    covered: dict[int, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    """Raw GPU-hours covered per reservation index."""

    @property
    def gpu_hours(self) -> Decimal:
        return self.gpu_seconds / 3600

    @property
    def overflow(self) -> Decimal:
        return max(ZERO, self.gpu_hours - sum(self.covered.values(), ZERO))


def reservation_id(tenant: str, r: Reservation) -> str:
    return f"{tenant}/reservations/{r.tier}/{r.start:%Y-%m-%dT%H:%M:%SZ}"


def focus_table(
    con: duckdb.DuckDBPyConnection,
    period: str,
    *,
    tenants: Mapping[str, Tenant],
    provider: Provider | None = None,
) -> pa.Table:
    """The FOCUS rows of billing period `period` (YYYY-MM): every draft or final invoice of
    the period, and every adjustment note finalized during it (as corrections).

    `tenants` gives the reservations (start, end, GPUs) needed to attribute reserved hours
    hour by hour, exactly as the invoices were priced."""
    provider = provider or Provider()
    start, end = month_bounds(period)
    rows: list[dict[str, Any]] = []
    invoices = con.execute(
        "SELECT invoice_id, number, kind, status, tenant, period, adjusts, document, "
        "finalized_at FROM invoices WHERE (period = ? AND kind = 'invoice') OR "
        "(kind = 'adjustment' AND finalized_at >= ? AND finalized_at < ?) ORDER BY invoice_id",
        [period, start, end],
    ).fetchall()
    for invoice_id, number, kind, status, tenant, inv_period, adjusts, text, _ in invoices:
        doc = json.loads(text)
        if tenant not in tenants:
            raise ValueError(
                f"invoice {invoice_id}: tenant {tenant!r} is missing from the tenants "
                "configuration; the FOCUS export needs its reservations and name")
        common = _common(doc, provider, tenants[tenant], start, end, invoice_id, kind, status)
        common["x_Adjusts"] = adjusts
        if kind == "adjustment":
            rows += _correction_rows(doc, common, tenants[tenant], inv_period, number)
        else:
            rows += _invoice_rows(con, doc, common, tenants[tenant], start, end, invoice_id)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _common(doc: Mapping[str, Any], provider: Provider, tenant: Tenant, start: datetime,
            end: datetime, invoice_id: str, kind: str, status: str) -> dict[str, Any]:
    return {
        "BillingAccountId": provider.billing_account_id,
        "BillingAccountName": provider.billing_account_name,
        "BillingCurrency": doc["currency"],
        "BillingPeriodStart": start,
        "BillingPeriodEnd": end,
        "HostProviderName": provider.host_provider_name,
        "InvoiceId": invoice_id,
        "InvoiceIssuerName": provider.invoice_issuer_name,
        "ServiceCategory": provider.service_category,
        "ServiceName": provider.service_name,
        "ServiceProviderName": provider.service_provider_name,
        "ServiceSubcategory": provider.service_subcategory,
        "SubAccountId": tenant.name,
        "SubAccountName": tenant.display_name or tenant.name,
        "x_InvoiceKind": kind,
        "x_InvoiceStatus": status,
        "x_MeteringBasis": doc["basis"],
        "x_RateCardVersion": doc["rate_card_version"],
    }


def _minor(doc: Mapping[str, Any]) -> Decimal:
    """The currency's minor unit, read off the invoice's own rounded amounts."""
    exponents = [Decimal(line["amount"]).as_tuple().exponent for line in doc["lines"]]
    exponent = min((e for e in exponents if isinstance(e, int)), default=-2)
    return Decimal(1).scaleb(exponent)


def _standalone(common: Mapping[str, Any], line_no: int, line: Mapping[str, Any],
                category: str, frequency: str, start: datetime, end: datetime,
                **extra: Any) -> dict[str, Any]:
    """A charge unrelated to other charges and without a SKU price: all costs equal."""
    amount = Decimal(line["amount"])
    return dict(
        common, ChargeCategory=category, ChargeFrequency=frequency,
        ChargeDescription=line["description"], ChargePeriodStart=start, ChargePeriodEnd=end,
        BilledCost=amount, EffectiveCost=amount, ListCost=amount, ContractedCost=amount,
        InvoiceDetailId=f"{common['InvoiceId']}#{line_no}", x_InvoiceLineKind=line["kind"],
        x_HardwareTier=line.get("hardware_tier"), **extra)


def _invoice_rows(con: duckdb.DuckDBPyConnection, doc: Mapping[str, Any],
                  common: Mapping[str, Any], tenant: Tenant, start: datetime, end: datetime,
                  invoice_id: str) -> list[dict[str, Any]]:
    minor = _minor(doc)
    lines = list(enumerate(doc["lines"], start=1))
    out: list[dict[str, Any]] = []
    reservations = [r for r in tenant.reservations if active_hours(r.start, r.end, start, end)]
    reservation_lines = [(n, x) for n, x in lines if x["kind"] == "reservation"]
    if len(reservations) != len(reservation_lines):
        raise ValueError(
            f"invoice {invoice_id}: {len(reservation_lines)} reservation lines but tenant "
            f"{tenant.name} has {len(reservations)} reservations active in the period; the "
            "tenants configuration changed since the invoice was priced: re-run tenant_bills")
    usage = _ledger_usage(con, tenant, doc["basis"], start, end, reservations)
    multipliers = {(u["hardware_tier"], u["size_class"]): Decimal(u["multiplier"])
                   for u in doc["usage"]}

    # Reserved GPUs: the purchase, and its cost amortized over the hours it covered or not.
    for index, (r, (line_no, line)) in enumerate(zip(reservations, reservation_lines,
                                                     strict=True)):
        out += _reservation_rows(common, tenant, r, index, line_no, line, usage, start, end,
                                 minor)

    # On-demand usage: overflow per row, units per band, amounts per line, then the discount.
    on_demand = _on_demand_rows(common, doc, lines, usage, multipliers, minor, invoice_id)
    band_fees = [
        _standalone(common, n, x, "Adjustment", "One-Time", start, end,
                    SkuId=x["hardware_tier"])
        for n, x in lines if x["kind"] == "band_fee"
    ]
    discount = sum((Decimal(x["amount"]) for _, x in lines if x["kind"] == "discount"), ZERO)
    if discount:
        discounted = on_demand + band_fees
        shares = allocate(discount, [abs(r["BilledCost"]) for r in discounted], minor)
        for row, share in zip(discounted, shares, strict=True):
            row["BilledCost"] += share
            row["EffectiveCost"] = row["BilledCost"]
            if row["ChargeCategory"] == "Adjustment":
                row["ListCost"] = row["ContractedCost"] = row["BilledCost"]
    out += [r for r in on_demand if r["PricingQuantity"] or r["BilledCost"]]
    out += band_fees

    for n, line in lines:
        if line["kind"] == "base_fee":
            price, qty = Decimal(line["unit_price"]), Decimal(line["quantity"])
            out.append(dict(
                _standalone(common, n, line, "Purchase", "Recurring", start, end),
                SkuId=f"plan/{doc['plan']}", SkuPriceId=f"plan/{doc['plan']}/base-fee",
                SkuMeter="Plan base fee", PricingCategory="Standard", PricingQuantity=qty,
                PricingUnit="Months", ListUnitPrice=price, ContractedUnitPrice=price,
                ListCost=price * qty, ContractedCost=price * qty,
                SkuPriceDetails=json.dumps({"x_Plan": doc["plan"]})))
        elif line["kind"] == "true_up":
            out.append(_standalone(common, n, line, "Adjustment", "One-Time", start, end))
        elif line["kind"] == "credit":
            out.append(_standalone(common, n, line, "Credit", "One-Time", start, end))
    return out


def _ledger_usage(con: duckdb.DuckDBPyConnection, tenant: Tenant, basis: str,
                  start: datetime, end: datetime, reservations: Sequence[Reservation]
                  ) -> list[_Usage]:
    """Daily usage rows of the tenant, with the reserved GPU-hours each one used, netted hour
    by hour as pricing does: in each hour every row of a tier is covered by the same
    fraction min(1, reserved / used), split over the reservations by their GPUs."""
    column = "used_gpu_seconds" if basis == "usage" else "allocated_gpu_seconds"
    # Grouping happens in DuckDB, so a month of raw samples never comes into memory.
    hourly = con.execute(
        f"SELECT date_trunc('hour', window_start) AS hour, cluster, node, gpu_uuid, "
        f"gpu_product, mig_profile, hardware_tier, size_class, model, workload_kind, "
        f"sum({column}::DECIMAL(38, 6)) FROM ledger "
        "WHERE tenant = ? AND window_start >= ? AND window_start < ? "
        f"GROUP BY ALL HAVING sum({column}) > 0 ORDER BY ALL",
        [tenant.name, start, end],
    ).fetchall()
    used: dict[tuple[datetime, str], Decimal] = defaultdict(lambda: ZERO)
    for hour, *_, tier, _size, _model, _kind, seconds in hourly:
        used[(hour, tier)] += Decimal(seconds) / 3600
    rows: dict[tuple[Any, ...], _Usage] = {}
    for hour, cluster, node, uuid, product, mig, tier, size, model, kind, seconds in hourly:
        day = hour.replace(hour=0)
        key = (day, cluster, node, uuid, product, mig, tier, size, model, kind)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _Usage(day.astimezone(UTC), cluster, node, uuid, product, mig,
                                     tier, size, model, kind)
        row.gpu_seconds += Decimal(seconds)
        active = [(i, r.gpus) for i, r in enumerate(reservations)
                  if r.tier == tier and r.start <= hour and (r.end is None or hour < r.end)]
        reserved = sum((g for _, g in active), ZERO)
        total = used[(hour, tier)]
        if reserved and total:
            fraction = min(Decimal(1), reserved / total)
            for i, gpus in active:
                row.covered[i] += Decimal(seconds) / 3600 * fraction * gpus / reserved
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


def _reservation_rows(common: Mapping[str, Any], tenant: Tenant, r: Reservation, index: int,
                      line_no: int, line: Mapping[str, Any], usage: Sequence[_Usage],
                      start: datetime, end: datetime, minor: Decimal) -> list[dict[str, Any]]:
    rid = reservation_id(tenant.name, r)
    price, qty, amount = (Decimal(line[k]) for k in ("unit_price", "quantity", "amount"))
    commitment = {
        "CommitmentDiscountId": rid, "CommitmentDiscountCategory": "Usage",
        "CommitmentDiscountType": "Reserved GPU", "CommitmentDiscountUnit": GPU_HOURS,
        "CommitmentDiscountName": f"{r.gpus} reserved {r.tier} GPUs from "
                                  f"{r.start:%Y-%m-%d %H:%M}Z",
        "SkuId": r.tier, "SkuPriceId": f"{r.tier}/reserved", "SkuMeter": "Reserved GPU",
        "SkuPriceDetails": json.dumps({"x_HardwareTier": r.tier, "x_Reserved": True}),
        "ListUnitPrice": price, "ContractedUnitPrice": price, "PricingUnit": GPU_HOURS,
        "x_HardwareTier": r.tier, "InvoiceDetailId": f"{common['InvoiceId']}#{line_no}",
        "x_InvoiceLineKind": line["kind"],
    }
    rows = [dict(
        common, **commitment, ChargeCategory="Purchase", ChargeFrequency="Recurring",
        ChargeDescription=line["description"], ChargePeriodStart=start, ChargePeriodEnd=end,
        PricingCategory="Standard", PricingQuantity=qty, CommitmentDiscountQuantity=qty,
        BilledCost=amount, EffectiveCost=ZERO, ListCost=price * qty, ContractedCost=price * qty)]

    # What the reservation could cover, hour by hour (a partial first or last hour counts
    # for its part, as in the reservation's price), less what it covered.
    unused_by_day: dict[datetime, Decimal] = defaultdict(lambda: ZERO)
    covered_by_day: dict[datetime, Decimal] = defaultdict(lambda: ZERO)
    for u in usage:
        if u.covered.get(index):
            covered_by_day[u.day] += u.covered[index]
    hour = start
    while hour < end:
        capacity = r.gpus * active_hours(r.start, r.end, hour, hour + HOUR)
        unused_by_day[hour.replace(hour=0)] += capacity
        hour += HOUR
    for day, covered in covered_by_day.items():
        unused_by_day[day] -= covered
    used_rows = [u for u in usage if u.covered.get(index)]
    unused_days = sorted(d for d, v in unused_by_day.items() if v > 0)
    weights = [u.covered[index] for u in used_rows] + [unused_by_day[d] for d in unused_days]
    quantities = allocate(qty, weights, QUANTITY)
    costs = allocate(amount, quantities, minor)
    for i, u in enumerate(used_rows):
        q = quantities[i]
        rows.append(dict(
            _resource(common, u), **commitment, ChargeCategory="Usage",
            ChargeFrequency="Usage-Based", CommitmentDiscountStatus="Used",
            ChargeDescription=f"{r.tier} GPU usage covered by reservation {rid}",
            PricingCategory="Committed", PricingQuantity=q, ConsumedQuantity=q,
            ConsumedUnit=GPU_HOURS, CommitmentDiscountQuantity=q, BilledCost=ZERO,
            EffectiveCost=costs[i], ListCost=price * q, ContractedCost=price * q,
            x_GpuSeconds=_seconds(u, u.covered[index])))
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


def _seconds(u: _Usage, gpu_hours: Decimal) -> Decimal:
    return (gpu_hours * 3600).quantize(QUANTITY)


def _on_demand_rows(common: Mapping[str, Any], doc: Mapping[str, Any],
                    lines: Sequence[tuple[int, Mapping[str, Any]]], usage: Sequence[_Usage],
                    multipliers: Mapping[tuple[str, str], Decimal], minor: Decimal,
                    invoice_id: str) -> list[dict[str, Any]]:
    discount_factor = Decimal(1) + sum(
        (Decimal(x["unit_price"]) for _, x in lines if x["kind"] == "discount"), ZERO)
    out: list[dict[str, Any]] = []
    by_tier: dict[str, list[tuple[_Usage, Decimal, Decimal]]] = defaultdict(list)
    for u_doc in doc["usage"]:
        tier, size = u_doc["hardware_tier"], u_doc["size_class"]
        rows = sorted((u for u in usage if u.tier == tier and u.size == size), key=_order)
        weights = [u.overflow for u in rows]
        try:
            consumed = allocate(Decimal(u_doc["overflow_gpu_hours"]), weights, QUANTITY)
            units = allocate(Decimal(u_doc["billable_units"]), weights, QUANTITY)
        except ValueError as error:
            raise ValueError(
                f"invoice {invoice_id}: {tier}/{size}: the ledger no longer matches the "
                f"invoice's usage ({error}); re-run tenant_bills before exporting") from None
        by_tier[tier] += [(u, c, n) for u, c, n in zip(rows, consumed, units, strict=True)
                          if c or n]
    for tier, pieces_in in by_tier.items():
        pieces_in.sort(key=lambda p: _order(p[0]))
        bands = [(n, x) for n, x in lines if x["kind"] == "usage" and x["hardware_tier"] == tier]
        # Graduated bands fill in time order: the month's first units are the first band's.
        remaining = [Decimal(x["quantity"]) for _, x in bands]
        if sum(remaining, ZERO) != sum((p[2] for p in pieces_in), ZERO):
            raise ValueError(f"invoice {invoice_id}: {tier}: band quantities do not add up "
                             "to the usage's billable units")
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
            amounts = allocate(Decimal(line["amount"]), [p[2] for p in members], minor)
            price = Decimal(line["unit_price"])
            contracted = price * discount_factor
            match = _BAND.match(line["description"].split(", ", 1)[-1])
            mode, number = (match.group(1), match.group(2)) if match else ("flat", None)
            sku_price = f"{tier}/{mode}" + (f"/band-{number}" if number else "")
            for (u, c, q, _), amount in zip(members, amounts, strict=True):
                out.append(dict(
                    _resource(common, u), ChargeCategory="Usage", ChargeFrequency="Usage-Based",
                    ChargeDescription=f"{u.tier} on-demand GPU usage ({line['description']}), "
                                      f"{u.model or 'unknown model'} ({u.size})",
                    SkuPriceId=sku_price, SkuMeter="On-demand GPU",
                    SkuPriceDetails=json.dumps({"x_HardwareTier": tier, "x_PricingMode": mode,
                                                "x_Band": int(number) if number else None}),
                    PricingCategory="Standard", PricingQuantity=q, PricingUnit=BILLABLE_UNITS,
                    ConsumedQuantity=c, ConsumedUnit=GPU_HOURS, ListUnitPrice=price,
                    ContractedUnitPrice=contracted, ListCost=price * q,
                    ContractedCost=contracted * q, BilledCost=amount, EffectiveCost=amount,
                    InvoiceDetailId=f"{invoice_id}#{line_no}", x_InvoiceLineKind="usage",
                    x_GpuSeconds=_seconds(u, c),
                    x_SizeMultiplier=multipliers[(u.tier, u.size)]))
    return out


def _order(u: _Usage) -> tuple[Any, ...]:
    return (u.day, u.size, u.cluster, u.node, u.gpu_uuid, u.model or "", u.kind)


def _correction_rows(doc: Mapping[str, Any], common: Mapping[str, Any], tenant: Tenant,
                     corrected_period: str, number: str) -> list[dict[str, Any]]:
    """An adjustment note's delta lines, as corrections of the closed period they change."""
    lo, hi = month_bounds(corrected_period)
    out = []
    for n, line in enumerate(doc["lines"], start=1):
        category = CORRECTION_CATEGORY[line["kind"]]
        extra: dict[str, Any] = {"ChargeClass": "Correction", "SkuId": line["hardware_tier"]}
        if line["kind"] == "reservation":
            candidates = [r for r in tenant.reservations if r.tier == line["hardware_tier"]
                          and active_hours(r.start, r.end, lo, hi)]
            if candidates:
                r = candidates[0]
                extra.update(
                    CommitmentDiscountId=reservation_id(tenant.name, r),
                    CommitmentDiscountCategory="Usage", CommitmentDiscountType="Reserved GPU",
                    CommitmentDiscountName=f"{r.gpus} reserved {r.tier} GPUs from "
                                           f"{r.start:%Y-%m-%d %H:%M}Z")
        frequency = {"Usage": "Usage-Based", "Purchase": "Recurring"}.get(category, "One-Time")
        out.append(_standalone(common, n, line, category, frequency, lo, hi, **extra))
    for row in out:
        row["InvoiceDetailId"] = f"{number}#{row['InvoiceDetailId'].rsplit('#', 1)[1]}"
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
    folder.mkdir(parents=True, exist_ok=True)
    parquet = _atomic(folder / "focus.parquet", lambda path: pq.write_table(
        table.replace_schema_metadata({
            "focus_version": FOCUS_VERSION, "focus_metadata": json.dumps(meta)}),
        path, compression="zstd"))
    csv_path = _atomic(folder / "focus.csv",
                       lambda path: Path(path).write_text(csv_text(table), encoding="utf-8"))
    meta_path = _atomic(folder / "focus.metadata.json",
                        lambda path: Path(path).write_text(meta_text, encoding="utf-8"))
    return [parquet, csv_path, meta_path]


def _atomic(path: Path, write: Any) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
