"""The per-period cost-and-usage export in the FinOps Foundation's FOCUS format (version 1.4).

One row per charge, as FOCUS defines it: on-demand GPU usage per tenant, UTC day, resource (GPU
or MIG instance), hardware tier, size class, model and workload kind; reserved GPUs as
commitment-discount and capacity-reservation purchases and the usage they covered (or left
unused); base fees, true-ups, credits, tax; adjustment notes issued in the period as
corrections of closed periods. Plan minimums and reservations are contract commitments
(`ContractApplied`); the companion datasets are in models.billing.focus_datasets.

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
from typing import Any

import duckdb
import pyarrow as pa

from models.billing import lifecycle
from models.billing.books import Books
from models.billing.invoices import DocumentKind, StoredInvoice
from models.billing.pricing import (
    QUANTITY,
    HourUse,
    Invoice,
    InvoiceLine,
    LineKind,
    allocate,
    marginal_band,
)
from models.billing.rate_cards import RateCard, Reservation, Tenant, month_bounds
from models.errors import UserError

FOCUS_VERSION = "1.4"
"""The newest released FOCUS version: 1.4, approved 2026-06-04 (FOCUS_Spec PR #2436,
`candidate_recommendation` to `main`); 1.5 is due December 2026."""

ZERO = Decimal(0)
COST_SCALE = 12
"""Decimal places of money columns: a unit price (6) times a quantity (6) is exact in 12."""
DECIMAL = pa.decimal128(38, COST_SCALE)
DATETIME = pa.timestamp("us", tz="UTC")

GPU_HOURS = "GPU-Hours"
BILLABLE_UNITS = "Units"
"""The rate card's billable unit: a GPU-hour times its size class's multiplier (FOCUS Unit
Format: a recommended count-based unit, plural)."""
RESERVED_GPU = "Reserved GPU"
"""CommitmentDiscountType of a reservation, and the commitment program GPU-hours of a tier with
a reserved price are eligible for."""
ELIGIBLE = json.dumps({"CommitmentPrograms": [{"ProgramType": RESERVED_GPU}]})
"""CommitmentProgramEligibilityDetails of usage of a tier that can be reserved."""
RESERVATION_RESOURCE = "GPU Reservation"
"""ResourceType of a reservation's purchase and unused rows: the reservation is the resource."""


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


def provider_of(books: Books | None) -> Provider:
    """The finance file's issuer names the provider, the host and the invoice issuer (the
    name the documents carry); without one, the defaults above."""
    if books is None:
        return Provider()
    name = books.issuer.legal_name
    return Provider(service_provider_name=name, host_provider_name=name,
                    invoice_issuer_name=name, billing_account_name=name)


# (name, FOCUS data type, Arrow type). FOCUS columns first, alphabetically as in the spec's
# column table, then our own x_ columns.
COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("BilledCost", "Decimal", DECIMAL),
    ("BillingAccountId", "String", pa.string()),
    ("BillingAccountName", "String", pa.string()),
    ("BillingCurrency", "String", pa.string()),
    ("BillingPeriodEnd", "Date/Time", DATETIME),
    ("BillingPeriodStart", "Date/Time", DATETIME),
    ("CapacityReservationId", "String", pa.string()),
    ("CapacityReservationStatus", "String", pa.string()),
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
    ("CommitmentProgramEligibilityDetails", "JSON", pa.string()),
    ("ConsumedQuantity", "Decimal", DECIMAL),
    ("ConsumedUnit", "String", pa.string()),
    ("ContractApplied", "JSON", pa.string()),
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
    ("x_DocumentType", "String", pa.string()),
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

# Invoice line kinds -> the FOCUS charge category of the charge (of a correction, for an
# adjustment note's delta lines).
CHARGE_CATEGORY = {
    LineKind.USAGE: "Usage", LineKind.DISCOUNT: "Usage", LineKind.BAND_FEE: "Adjustment",
    LineKind.RESERVATION: "Purchase", LineKind.BASE_FEE: "Purchase",
    LineKind.TRUE_UP: "Adjustment", LineKind.CREDIT: "Credit", LineKind.TAX: "Tax",
    LineKind.TOKENS: "Usage",
}
TOWARD_MINIMUM = frozenset({LineKind.USAGE, LineKind.BAND_FEE, LineKind.DISCOUNT,
                            LineKind.RESERVATION, LineKind.TRUE_UP, LineKind.TOKENS})
"""Line kinds that count toward a plan's minimum commitment (DESIGN.md billing step 7: usage
after discount plus reservation fees), and the true-up that brings them to it."""


def contract_id(tenant: str) -> str:
    """The tenant's agreement with the platform: its plan and its reservations."""
    return f"{tenant}/contract"


def minimum_commitment_id(invoice: Invoice) -> str:
    """The plan's minimum spend for one billing period: a contract commitment."""
    return f"{invoice.tenant}/plan/{invoice.plan}/minimum/{invoice.period}"


def contract_applied(elements: Sequence[Mapping[str, Any]]) -> str | None:
    """ContractApplied: `{"Elements": [...]}`, decimals written digit for digit as JSON
    numbers (json.dumps would go through a float); read back with `parse_float=Decimal`."""
    if not elements:
        return None
    def text(value: Any) -> str:
        return format(value, "f") if isinstance(value, Decimal) else json.dumps(value)

    objects = ["{" + ", ".join(f"{json.dumps(key)}: {text(value)}"
                               for key, value in element.items()) + "}" for element in elements]
    return '{"Elements": [' + ", ".join(objects) + "]}"


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
    cards: Sequence[RateCard],
    provider: Provider | None = None,
) -> pa.Table:
    """The FOCUS rows of billing period `period` (YYYY-MM): every draft or final invoice or
    statement of the period, and every adjustment note finalized during it (as corrections).

    `tenants` gives each tenant's display name (SubAccountName); `cards` the rate card each
    invoice names (by version), for the on-demand list price of covered GPU-hours and which
    tiers can be reserved."""
    provider = provider or Provider()
    start, end = month_bounds(period)
    rows: list[dict[str, Any]] = []
    documents = lifecycle.period_documents(con, period, with_hours=True)
    usage = _ledger_usage(con, sorted({s.invoice.tenant for s in documents
                                       if s.kind is not DocumentKind.ADJUSTMENT}), start, end)
    for stored in documents:
        tenant = tenants.get(stored.invoice.tenant)
        if tenant is None:
            raise UserError(
                f"invoice {stored.invoice_id}: tenant {stored.invoice.tenant!r} is missing from "
                "the tenants configuration; the FOCUS export needs its name")
        card = card_of(stored.invoice, cards)
        common = _common(stored, provider, tenant, start, end)
        if stored.kind is DocumentKind.ADJUSTMENT:
            rows += _correction_rows(stored, common)
        else:
            rows += _invoice_rows(usage.get(stored.invoice.tenant, []), stored, common, card,
                                  start, end)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def card_of(invoice: Invoice, cards: Sequence[RateCard]) -> RateCard:
    """The rate card version an invoice was priced with."""
    for card in cards:
        if card.version == invoice.rate_card_version:
            return card
    raise UserError(f"invoice of {invoice.tenant} for {invoice.period}: rate card version "
                    f"{invoice.rate_card_version!r} is no longer in the rate-card file; the "
                    "FOCUS export needs its prices")


def _common(stored: StoredInvoice, provider: Provider, tenant: Tenant, start: datetime,
            end: datetime) -> dict[str, Any]:
    invoice = stored.invoice
    kind = stored.document_type
    return {
        "BillingAccountId": provider.billing_account_id,
        "BillingAccountName": provider.billing_account_name,
        "BillingCurrency": invoice.currency,
        "BillingPeriodStart": start,
        "BillingPeriodEnd": end,
        "HostProviderName": provider.host_provider_name,
        # A showback statement is not an invoice, issued or provisional: no InvoiceId.
        "InvoiceId": stored.invoice_id if kind.payable else None,
        "InvoiceIssuerName": provider.invoice_issuer_name,
        "ServiceCategory": provider.service_category,
        "ServiceName": provider.service_name,
        "ServiceProviderName": provider.service_provider_name,
        "ServiceSubcategory": provider.service_subcategory,
        "SubAccountId": tenant.name,
        "SubAccountName": tenant.display_name or tenant.name,
        "x_Adjusts": stored.adjusts,
        "x_DocumentType": kind.value,
        "x_InvoiceKind": stored.kind.value,
        "x_InvoiceStatus": stored.status.value,
        "x_MeteringBasis": invoice.basis,
        "x_RateCardVersion": invoice.rate_card_version,
    }


def _detail_id(common: Mapping[str, Any], line_no: int) -> str | None:
    """The InvoiceDetailId of an invoice line (the Invoice Detail dataset's row of it)."""
    invoice_id = common["InvoiceId"]
    return None if invoice_id is None else f"{invoice_id}#{line_no}"


def _minimum(invoice: Invoice, cost: Decimal) -> list[dict[str, Any]]:
    """The ContractApplied element of a charge counting `cost` toward the plan minimum."""
    if not invoice.minimum_commitment:
        return []
    return [{"ContractId": contract_id(invoice.tenant),
             "ContractCommitmentId": minimum_commitment_id(invoice),
             "ContractCommitmentAppliedCost": cost}]


def _standalone(common: Mapping[str, Any], line_no: int, line: InvoiceLine,
                category: str, frequency: str, start: datetime, end: datetime,
                **extra: Any) -> dict[str, Any]:
    """A charge unrelated to other charges and without a SKU price: all costs equal."""
    return dict(
        common, ChargeCategory=category, ChargeFrequency=frequency,
        ChargeDescription=line.description, ChargePeriodStart=start, ChargePeriodEnd=end,
        BilledCost=line.amount, EffectiveCost=line.amount, ListCost=line.amount,
        ContractedCost=line.amount, InvoiceDetailId=_detail_id(common, line_no),
        x_InvoiceLineKind=line.kind.value, x_HardwareTier=line.hardware_tier, **extra)


def _token_row(common: Mapping[str, Any], invoice: Invoice, line_no: int, line: InvoiceLine,
               start: datetime, end: datetime) -> dict[str, Any]:
    """A token line: priced per million tokens or per package, consumed in tokens."""
    model = line.model or "unknown model"
    if line.unit.startswith("package"):
        used = next((t.input_tokens + t.output_tokens for t in invoice.tokens
                     if t.model == line.model), None)
        unit, consumed, sku_price = "Packages", None if used is None else Decimal(used), "package"
    else:
        side = line.unit.removeprefix("million ").removesuffix(" tokens")
        unit, consumed, sku_price = "1000000 Tokens", line.quantity * 1_000_000, side
    price, contracted = line.unit_price, line.unit_price * invoice.discount_factor
    return dict(
        _standalone(common, line_no, line, "Usage", "Usage-Based", start, end),
        SkuId=f"tokens/{model}", SkuPriceId=f"tokens/{model}/{sku_price}", SkuMeter="Tokens",
        SkuPriceDetails=json.dumps({"x_Model": model}), PricingCategory="Standard",
        PricingQuantity=line.quantity, PricingUnit=unit, ConsumedQuantity=consumed,
        ConsumedUnit="Tokens", ListUnitPrice=price, ContractedUnitPrice=contracted,
        ListCost=price * line.quantity, ContractedCost=contracted * line.quantity)


def _invoice_rows(ledger: Sequence[tuple[Any, ...]], stored: StoredInvoice,
                  common: Mapping[str, Any], card: RateCard, start: datetime, end: datetime
                  ) -> list[dict[str, Any]]:
    invoice = stored.invoice
    lines = list(enumerate(invoice.lines, start=1))
    out: list[dict[str, Any]] = []
    usage = _resource_usage(ledger, stored)

    # Reserved GPUs: the purchase, and its cost amortized over the hours it covered or not.
    for line_no, line in lines:
        if line.kind is LineKind.RESERVATION:
            out += _reservation_rows(common, stored, card, line_no, line, usage)

    # On-demand usage: netted GPU-hours per row, units per band, amounts per line, then the
    # discount.
    on_demand = _on_demand_rows(common, stored, card, lines, usage)
    band_fees = [
        _standalone(common, n, x, "Adjustment", "One-Time", start, end, SkuId=x.hardware_tier)
        for n, x in lines if x.kind is LineKind.BAND_FEE
    ]
    tokens = [_token_row(common, invoice, n, x, start, end)
              for n, x in lines if x.kind is LineKind.TOKENS]
    on_demand += tokens
    discount = sum((x.amount for _, x in lines if x.kind is LineKind.DISCOUNT), ZERO)
    if discount:
        discounted = on_demand + band_fees
        shares = allocate(discount, [abs(r["BilledCost"]) for r in discounted], invoice.quantum)
        for row, share in zip(discounted, shares, strict=True):
            row["BilledCost"] += share
            row["EffectiveCost"] = row["BilledCost"]
            if row["ChargeCategory"] == "Adjustment":
                row["ListCost"] = row["ContractedCost"] = row["BilledCost"]
    # Usage after its discount share counts toward the plan minimum, band fees too.
    for row in [*on_demand, *band_fees]:
        row["ContractApplied"] = contract_applied(_minimum(invoice, row["BilledCost"]))
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
            # The shortfall settles the minimum at the end of its (monthly) interval.
            out.append(_standalone(common, n, line, "Adjustment", "One-Time", start, end,
                                   ContractApplied=contract_applied(
                                       _minimum(invoice, line.amount))))
        elif line.kind is LineKind.CREDIT:
            out.append(_standalone(common, n, line, "Credit", "One-Time", start, end))
        elif line.kind is LineKind.TAX:
            out.append(_standalone(common, n, line, "Tax", "Recurring", start, end))
    return out


def _ledger_usage(con: duckdb.DuckDBPyConnection, tenants: Sequence[str], start: datetime,
                  end: datetime) -> dict[str, list[tuple[Any, ...]]]:
    """Per tenant, its ledger GPU-seconds of [start, end) per hour and resource, tier, size
    class, model and kind, in that order: (hour, cluster, node, gpu_uuid, gpu_product,
    mig_profile, tier, size, model, kind, allocated, used, allocated > 0, used > 0)."""
    # One scan of the month for every tenant (one query per invoice scanned it once each),
    # grouped in DuckDB so that a month of raw samples never comes into memory. Both bases are
    # summed, each invoice takes its own; "> 0" is on the DOUBLE sums, as it always was.
    found: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    # Hours come as epoch seconds, each made a datetime once: DuckDB's own conversion of
    # 30,000 timestamps through pytz was a third of the query's time.
    hours: dict[int, datetime] = {}
    for tenant, epoch, *row in con.execute(
        "SELECT tenant, epoch(date_trunc('hour', window_start))::BIGINT AS hour, cluster, "
        "node, gpu_uuid, "
        "gpu_product, mig_profile, hardware_tier, size_class, model, workload_kind, "
        "sum(allocated_gpu_seconds::DECIMAL(38, 6)), sum(used_gpu_seconds::DECIMAL(38, 6)), "
        "sum(allocated_gpu_seconds) > 0 AS allocated_billed, "
        "coalesce(sum(used_gpu_seconds) > 0, false) AS used_billed FROM ledger "
        "WHERE list_contains(?, tenant) AND window_start >= ? AND window_start < ? "
        "GROUP BY ALL HAVING allocated_billed OR used_billed "
        "ORDER BY tenant, hour, cluster, node, gpu_uuid, gpu_product, mig_profile, "
        "hardware_tier, size_class, model, workload_kind",
        [list(tenants), start, end],
    ).fetchall():
        hour = hours.get(epoch)
        if hour is None:
            hour = hours[epoch] = datetime.fromtimestamp(epoch, UTC)
        found[tenant].append((hour, *row))
    return found


def _resource_usage(ledger: Sequence[tuple[Any, ...]], stored: StoredInvoice) -> list[_Usage]:
    """Daily usage rows of the invoice's tenant per resource, each with its share of the
    invoice's netting: every on-demand or covered cell of an hour, tier and size class spread
    over that hour's ledger rows (`_ledger_usage`) in proportion to their GPU-hours."""
    invoice = stored.invoice
    used = invoice.basis == "usage"
    hourly = [(*key, u if used else a) for *key, a, u, a_billed, u_billed in ledger
              if (u_billed if used else a_billed)]
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
            raise UserError(
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
    """The commitment-discount and capacity-reservation columns of a reservation's charges:
    one agreement is both (GPUs held for the tenant, billed used or not, at the reserved
    price), so both ids are the reservation's."""
    return {
        "CommitmentDiscountId": reservation_id, "CommitmentDiscountCategory": "Usage",
        "CommitmentDiscountType": RESERVED_GPU,
        "CommitmentDiscountName": reservation_name(r),
        "CapacityReservationId": reservation_id,
    }


def reservation_name(r: Reservation) -> str:
    return f"{r.gpus} reserved {r.tier} GPUs from {r.start:%Y-%m-%d %H:%M}Z"


def _reservation_resource(reservation_id: str, r: Reservation) -> dict[str, Any]:
    """The reservation as the resource of its purchase and unused rows (FOCUS 1.4:
    CommitmentDiscountId equals ResourceId on both)."""
    return {"ResourceId": reservation_id, "ResourceName": reservation_name(r),
            "ResourceType": RESERVATION_RESOURCE}


def _reservation_rows(common: Mapping[str, Any], stored: StoredInvoice, card: RateCard,
                      line_no: int, line: InvoiceLine, usage: Sequence[_Usage]
                      ) -> list[dict[str, Any]]:
    invoice = stored.invoice
    start, end = common["BillingPeriodStart"], common["BillingPeriodEnd"]
    rid = line.reservation_id
    assert rid is not None, "pricing names the reservation of every reservation line"
    r = invoice.reservation(rid)
    price, qty, amount = line.unit_price, line.quantity, line.amount
    reservation = {"ContractId": contract_id(invoice.tenant), "ContractCommitmentId": rid}
    commitment = {
        **_commitment(rid, r), "CommitmentDiscountUnit": GPU_HOURS, "SkuId": r.tier,
        "x_HardwareTier": r.tier, "InvoiceDetailId": _detail_id(common, line_no),
        "x_InvoiceLineKind": line.kind.value,
    }
    reserved_sku = {
        "SkuPriceId": f"{r.tier}/reserved", "SkuMeter": RESERVED_GPU,
        "SkuPriceDetails": json.dumps({"x_HardwareTier": r.tier, "x_Reserved": True}),
        "ListUnitPrice": price, "ContractedUnitPrice": price, "PricingUnit": GPU_HOURS,
    }
    rows = [dict(
        common, **commitment, **reserved_sku, **_reservation_resource(rid, r),
        ChargeCategory="Purchase", ChargeFrequency="Recurring",
        ChargeDescription=line.description, ChargePeriodStart=start, ChargePeriodEnd=end,
        PricingCategory="Standard", PricingQuantity=qty, CommitmentDiscountQuantity=qty,
        BilledCost=amount, EffectiveCost=ZERO, ListCost=price * qty, ContractedCost=price * qty,
        ContractApplied=contract_applied([
            {**reservation, "ContractCommitmentAppliedCost": amount,
             "ContractCommitmentAppliedQuantity": qty,
             "ContractCommitmentAppliedUnit": GPU_HOURS},
            *_minimum(invoice, amount)]))]

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
        raise UserError(
            f"invoice {stored.invoice_id}: reservation {rid}: the stored netting holds "
            f"{sum(quantities, ZERO)} GPU-hours, the reservation line {qty}; re-run "
            "tenant_bills")
    costs = allocate(amount, quantities, invoice.quantum)
    # Covered GPU-hours are priced as the on-demand usage they are: list and contracted unit
    # prices exclude the commitment discount, so ContractedCost - EffectiveCost is the saving.
    units = {t.hardware_tier: ZERO for t in invoice.usage}
    for t in invoice.usage:
        units[t.hardware_tier] += t.billable_units
    band, list_price = marginal_band(card, r.tier, units.get(r.tier, ZERO))
    contracted = list_price * invoice.discount_factor
    on_demand_sku = {
        "SkuPriceId": _sku_price_id(r.tier, band.mode.value, band.number),
        "SkuMeter": "On-demand GPU",
        "SkuPriceDetails": json.dumps({"x_HardwareTier": r.tier,
                                       "x_PricingMode": band.mode.value, "x_Band": band.number,
                                       "x_CoveredBy": RESERVED_GPU}),
        "PricingUnit": BILLABLE_UNITS, "ListUnitPrice": list_price,
        "ContractedUnitPrice": contracted,
    }
    for i, u in enumerate(used_rows):
        q = quantities[i]
        multiplier = _multiplier(invoice, u)
        billable = q * multiplier
        rows.append(dict(
            _resource(common, u), **commitment, **on_demand_sku, ChargeCategory="Usage",
            ChargeFrequency="Usage-Based", CommitmentDiscountStatus="Used",
            CapacityReservationStatus="Used",
            ChargeDescription=f"{r.tier} GPU usage covered by reservation {rid}",
            PricingCategory="Committed", PricingQuantity=billable, ConsumedQuantity=q,
            ConsumedUnit=GPU_HOURS, CommitmentDiscountQuantity=q, BilledCost=ZERO,
            EffectiveCost=costs[i], ListCost=list_price * billable,
            ContractedCost=contracted * billable, x_GpuSeconds=_seconds(q),
            x_SizeMultiplier=multiplier, CommitmentProgramEligibilityDetails=ELIGIBLE,
            ContractApplied=contract_applied([{
                **reservation, "ContractCommitmentAppliedQuantity": q,
                "ContractCommitmentAppliedUnit": GPU_HOURS}])))
    for j, day in enumerate(unused_days, start=len(used_rows)):
        q = quantities[j]
        rows.append(dict(
            common, **commitment, **reserved_sku, **_reservation_resource(rid, r),
            ChargeCategory="Usage", ChargeFrequency="Usage-Based",
            CommitmentDiscountStatus="Unused", CapacityReservationStatus="Unused",
            ChargeDescription=f"unused hours of reservation {rid}",
            ChargePeriodStart=day, ChargePeriodEnd=day + timedelta(days=1),
            PricingCategory="Committed", PricingQuantity=q, CommitmentDiscountQuantity=q,
            BilledCost=ZERO, EffectiveCost=costs[j], ListCost=price * q,
            ContractedCost=price * q,
            ContractApplied=contract_applied([{
                **reservation, "ContractCommitmentAppliedQuantity": q,
                "ContractCommitmentAppliedUnit": GPU_HOURS}])))
    return rows


def _seconds(gpu_hours: Decimal) -> Decimal:
    return (gpu_hours * 3600).quantize(QUANTITY)


def _multiplier(invoice: Invoice, u: _Usage) -> Decimal:
    return next(t.multiplier for t in invoice.usage
                if t.hardware_tier == u.tier and t.size_class == u.size)


def _sku_price_id(tier: str, mode: str, band: int | None) -> str:
    return f"{tier}/{mode}" + (f"/band-{band}" if band else "")


def _on_demand_rows(common: Mapping[str, Any], stored: StoredInvoice, card: RateCard,
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
            raise UserError(
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
            raise UserError(f"invoice {stored.invoice_id}: {tier}: band quantities do not "
                            "add up to the usage's billable units; re-run tenant_bills")
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
        reservable = card.tier(tier).reserved_price is not None
        for b, (line_no, line) in enumerate(bands):
            members = [p for p in pieces if p[3] == b]
            amounts = allocate(line.amount, [p[2] for p in members], invoice.quantum)
            price = line.unit_price
            contracted = price * discount_factor
            assert line.band is not None, "pricing names the band of every usage line"
            mode, number = line.band.mode.value, line.band.number
            # A band split by time of use is two prices: each its own SKU price (FOCUS: one
            # list price per SkuPriceId). Pricing names the off-peak part in its description.
            off_peak = line.description.endswith(", off-peak")
            sku_price_id = _sku_price_id(tier, mode, number) + ("/off-peak" if off_peak else "")
            for (u, c, q, _), amount in zip(members, amounts, strict=True):
                out.append(dict(
                    _resource(common, u), ChargeCategory="Usage", ChargeFrequency="Usage-Based",
                    ChargeDescription=f"{u.tier} on-demand GPU usage ({line.description}), "
                                      f"{u.model or 'unknown model'} ({u.size})",
                    SkuPriceId=sku_price_id, SkuMeter="On-demand GPU",
                    SkuPriceDetails=json.dumps({"x_HardwareTier": tier, "x_PricingMode": mode,
                                                "x_Band": number, "x_OffPeak": off_peak}),
                    PricingCategory="Standard", PricingQuantity=q, PricingUnit=BILLABLE_UNITS,
                    ConsumedQuantity=c, ConsumedUnit=GPU_HOURS, ListUnitPrice=price,
                    ContractedUnitPrice=contracted, ListCost=price * q,
                    ContractedCost=contracted * q, BilledCost=amount, EffectiveCost=amount,
                    InvoiceDetailId=_detail_id(common, line_no), x_InvoiceLineKind="usage",
                    x_GpuSeconds=_seconds(c), x_SizeMultiplier=_multiplier(invoice, u),
                    CommitmentProgramEligibilityDetails=ELIGIBLE if reservable else None))
    return out


def _order(u: _Usage) -> tuple[Any, ...]:
    return (u.day, u.size, u.cluster, u.node, u.gpu_uuid, u.model or "", u.kind)


def _correction_rows(stored: StoredInvoice, common: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An adjustment note's delta lines, as corrections of the closed period they change.
    Corrections carry no SKU price (FOCUS allows it), so their pricing columns are null."""
    note = stored.invoice
    lo, hi = month_bounds(note.period)
    out = []
    for n, line in enumerate(note.lines, start=1):
        category = CHARGE_CATEGORY[line.kind]
        extra: dict[str, Any] = {"ChargeClass": "Correction", "SkuId": line.hardware_tier}
        applied = _minimum(note, line.amount) if line.kind in TOWARD_MINIMUM else []
        if line.reservation_id is not None:
            r = note.reservation(line.reservation_id)
            extra.update(_commitment(line.reservation_id, r))
            extra.update(_reservation_resource(line.reservation_id, r))
            applied.insert(0, {"ContractId": contract_id(note.tenant),
                               "ContractCommitmentId": line.reservation_id,
                               "ContractCommitmentAppliedCost": line.amount})
        extra["ContractApplied"] = contract_applied(applied)
        frequency = {"Usage": "Usage-Based", "Purchase": "Recurring",
                     "Tax": "Recurring"}.get(category, "One-Time")
        out.append(_standalone(common, n, line, category, frequency, lo, hi, **extra))
    return out


def metadata(dataset_id: str, columns: Sequence[tuple[str, str, pa.DataType]],
             table: pa.Table, period: str, created: datetime) -> dict[str, Any]:
    """FOCUS metadata of one dataset of the export: its schema, with the FOCUS version it
    conforms to."""
    definitions = []
    for name, kind, arrow in columns:
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
        "DatasetInstance": dataset_id,
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
    # Column by column: a datetime column holds a few distinct values, each formatted once.
    columns = []
    for column in table.columns:
        texts: dict[Any, str] = {}
        values = column.to_pylist()
        for i, value in enumerate(values):
            text = texts.get(value)
            if text is None:
                text = texts[value] = _csv_value(value)
            values[i] = text
        columns.append(values)
    writer.writerows(zip(*columns, strict=True))
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in {"-0", "0"} else text
    return str(value)
