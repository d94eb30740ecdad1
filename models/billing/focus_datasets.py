"""The FOCUS 1.4 datasets beside Cost and Usage, for a platform that issues payable invoices
and holds contract commitments: Invoice Detail, Billing Period and Contract Commitment.

Like the cost-and-usage rows (models.billing.focus), every figure is a stored document's:
Invoice Detail has one row per line of each payable document of the period (the row the
cost-and-usage dataset's InvoiceDetailId points to), so per InvoiceId both datasets sum to the
document total; Contract Commitment has a row for every commitment a cost-and-usage row's
ContractApplied names (plan minimums and reservations). See docs/focus.md."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from models.billing import lifecycle
from models.billing.focus import (
    CHARGE_CATEGORY,
    COLUMNS,
    DATETIME,
    DECIMAL,
    FOCUS_VERSION,
    GPU_HOURS,
    Provider,
    contract_id,
    csv_text,
    focus_table,
    metadata,
    minimum_commitment_id,
    reservation_name,
)
from models.billing.invoices import DocumentKind, Status, StoredInvoice
from models.billing.pricing import LineKind
from models.billing.rate_cards import RateCard, Tenant, month_bounds
from models.errors import UserError
from models.files import atomic_open, atomic_write

Column = tuple[str, str, pa.DataType]
ZERO = Decimal(0)


@dataclass(frozen=True)
class Dataset:
    """One FOCUS dataset of a period's export: its id, file stem, columns and rows."""

    dataset_id: str
    """`CostAndUsage`, `InvoiceDetail`, `BillingPeriod`, `ContractCommitment`."""
    stem: str
    columns: tuple[Column, ...]
    table: pa.Table


def schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(name, arrow) for name, _, arrow in columns])


INVOICE_DETAIL: tuple[Column, ...] = (
    ("BilledCost", "Decimal", DECIMAL),
    ("BillingAccountId", "String", pa.string()),
    ("BillingCurrency", "String", pa.string()),
    ("BillingPeriodEnd", "Date/Time", DATETIME),
    ("BillingPeriodStart", "Date/Time", DATETIME),
    ("ChargeCategory", "String", pa.string()),
    ("InvoiceDetailCreated", "Date/Time", DATETIME),
    ("InvoiceDetailDescription", "String", pa.string()),
    ("InvoiceDetailGrain", "JSON", pa.string()),
    ("InvoiceDetailId", "String", pa.string()),
    ("InvoiceDetailLastUpdated", "Date/Time", DATETIME),
    ("InvoiceId", "String", pa.string()),
    ("InvoiceIssueDate", "Date/Time", DATETIME),
    ("InvoiceIssueStatus", "String", pa.string()),
    ("InvoiceIssuerName", "String", pa.string()),
    ("PaymentCurrency", "String", pa.string()),
    ("PaymentDueDate", "Date/Time", DATETIME),
    ("PaymentTerms", "String", pa.string()),
    ("PurchaseOrderNumber", "String", pa.string()),
    ("ReferenceInvoiceId", "String", pa.string()),
    ("x_DocumentType", "String", pa.string()),
    ("x_InvoiceLineKind", "String", pa.string()),
    ("x_PricingQuantity", "Decimal", DECIMAL),
    ("x_PricingUnit", "String", pa.string()),
    ("x_SubAccountId", "String", pa.string()),
    ("x_UnitPrice", "Decimal", DECIMAL),
)
"""Every Mandatory column; PurchaseOrderNumber (tenants give purchase orders); the
payment-currency columns are left out (billing and payment currency are always the same).
The x_ columns carry what the invoice shows and FOCUS has no column for: quantity, unit and
unit price of each line."""

BILLING_PERIOD: tuple[Column, ...] = (
    ("BillingPeriodCreated", "Date/Time", DATETIME),
    ("BillingPeriodEnd", "Date/Time", DATETIME),
    ("BillingPeriodLastUpdated", "Date/Time", DATETIME),
    ("BillingPeriodStart", "Date/Time", DATETIME),
    ("BillingPeriodStatus", "String", pa.string()),
    ("InvoiceIssuerName", "String", pa.string()),
)

CONTRACT_COMMITMENT: tuple[Column, ...] = (
    ("BillingCurrency", "String", pa.string()),
    ("ContractCommitmentApplicability", "JSON", pa.string()),
    ("ContractCommitmentBenefitCategory", "String", pa.string()),
    ("ContractCommitmentCategory", "String", pa.string()),
    ("ContractCommitmentCost", "Decimal", DECIMAL),
    ("ContractCommitmentCreated", "Date/Time", DATETIME),
    ("ContractCommitmentDescription", "String", pa.string()),
    ("ContractCommitmentDiscountPercentage", "Decimal", DECIMAL),
    ("ContractCommitmentDurationType", "String", pa.string()),
    ("ContractCommitmentFulfillmentInterval", "String", pa.string()),
    ("ContractCommitmentId", "String", pa.string()),
    ("ContractCommitmentLastUpdated", "Date/Time", DATETIME),
    ("ContractCommitmentLifecycleStatus", "String", pa.string()),
    ("ContractCommitmentModel", "String", pa.string()),
    ("ContractCommitmentOfferCategory", "String", pa.string()),
    ("ContractCommitmentPaymentInterval", "String", pa.string()),
    ("ContractCommitmentPaymentModel", "String", pa.string()),
    ("ContractCommitmentPeriodEnd", "Date/Time", DATETIME),
    ("ContractCommitmentPeriodStart", "Date/Time", DATETIME),
    ("ContractCommitmentQuantity", "Decimal", DECIMAL),
    ("ContractCommitmentType", "String", pa.string()),
    ("ContractCommitmentUnit", "String", pa.string()),
    ("ContractId", "String", pa.string()),
    ("ContractPeriodEnd", "Date/Time", DATETIME),
    ("ContractPeriodStart", "Date/Time", DATETIME),
    ("InvoiceIssuerName", "String", pa.string()),
    ("ServiceProviderName", "String", pa.string()),
)
"""The 1.4 dataset without its Conditional columns: no commitment is paid partially upfront
(ContractCommitmentPaymentUpfrontPercentage), prices and bills share one currency."""


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC)


def _grain(tenant: str, kind: LineKind, tier: str | None, sku_price_id: str | None,
           reservation_id: str | None) -> str:
    """What makes an invoice line unique on its document, as InvoiceDetailGrain."""
    grain: dict[str, Any] = {"SubAccountId": tenant}
    if tier is not None:
        grain["SkuId"] = tier
    if sku_price_id is not None:
        grain["SkuPriceId"] = sku_price_id
    grain["x_InvoiceLineKind"] = kind.value
    if reservation_id is not None:
        grain["x_ReservationId"] = reservation_id
    return json.dumps(grain)


def _sku_price_id(stored: StoredInvoice, kind: LineKind, tier: str | None,
                  band: Any) -> str | None:
    if kind is LineKind.USAGE and band is not None:
        return f"{tier}/{band.mode.value}" + (f"/band-{band.number}" if band.number else "")
    if kind is LineKind.RESERVATION:
        return f"{tier}/reserved"
    if kind is LineKind.BASE_FEE:
        return f"plan/{stored.invoice.plan}/base-fee"
    return None


def invoice_detail_table(documents: Sequence[StoredInvoice], period: str, *,
                         provider: Provider, created: datetime) -> pa.Table:
    """One row per line of every payable document (invoice, credit or debit note; drafts as
    provisional, `Open` invoices) among the period's documents."""
    start, end = month_bounds(period)
    rows = []
    for stored in documents:
        kind = stored.document_type
        if not kind.payable:
            continue
        if stored.parties is None:
            raise UserError(
                f"{stored.stem}: when this document was made there was no `billing:` block "
                f"for {stored.invoice.tenant} in the tenants file, or no finance file "
                "(CHARGEBACK_FINANCE) to name the issuer, so it has no payment terms; FOCUS "
                "Invoice Detail requires them (docs/finance.md). Add them and re-run billing "
                "(a final document keeps what it was issued with)")
        invoice = stored.invoice
        final = stored.status is Status.FINAL
        made = stored.finalized_at or created
        reference = stored.adjusts if stored.kind is DocumentKind.ADJUSTMENT else None
        for n, line in enumerate(invoice.lines, start=1):
            rows.append({
                "BilledCost": line.amount, "BillingAccountId": provider.billing_account_id,
                "BillingCurrency": invoice.currency, "BillingPeriodStart": start,
                "BillingPeriodEnd": end, "ChargeCategory": CHARGE_CATEGORY[line.kind],
                "InvoiceDetailCreated": made, "InvoiceDetailLastUpdated": made,
                "InvoiceDetailDescription": line.description,
                "InvoiceDetailGrain": _grain(
                    invoice.tenant, line.kind, line.hardware_tier,
                    _sku_price_id(stored, line.kind, line.hardware_tier, line.band),
                    line.reservation_id),
                "InvoiceDetailId": f"{stored.invoice_id}#{n}",
                "InvoiceId": stored.invoice_id,
                "InvoiceIssueDate": _midnight(stored.issue_date),
                "InvoiceIssueStatus": "Issued" if final else "Open",
                "InvoiceIssuerName": provider.invoice_issuer_name,
                "PaymentCurrency": invoice.currency,
                "PaymentDueDate": _midnight(stored.due_date),
                "PaymentTerms": stored.parties.bill_to.payment_terms,
                "PurchaseOrderNumber": stored.parties.bill_to.purchase_order,
                "ReferenceInvoiceId": reference or stored.invoice_id,
                "x_DocumentType": kind.value, "x_InvoiceLineKind": line.kind.value,
                "x_PricingQuantity": line.quantity, "x_PricingUnit": line.unit,
                "x_SubAccountId": invoice.tenant, "x_UnitPrice": line.unit_price,
            })
    return pa.Table.from_pylist(rows, schema=schema(INVOICE_DETAIL))


def billing_period_table(con: duckdb.DuckDBPyConnection, period: str, *,
                         provider: Provider, created: datetime) -> pa.Table:
    """Every billing period up to `period` that has documents, and `period` itself: Closed
    once its invoices were finalized (`chargeback close`), Open before."""
    closes = dict(con.execute("SELECT period, closed_at FROM period_closes").fetchall())
    periods = {p for (p,) in con.execute(
        "SELECT DISTINCT period FROM invoices WHERE period <= ?", [period]).fetchall()}
    rows = []
    for name in sorted(periods | {period}):
        start, end = month_bounds(name)
        closed = closes.get(name)
        rows.append({
            "BillingPeriodCreated": start, "BillingPeriodStart": start, "BillingPeriodEnd": end,
            "BillingPeriodLastUpdated": (closed.astimezone(UTC) if closed is not None
                                         else max(created, start)),
            "BillingPeriodStatus": "Closed" if closed is not None else "Open",
            "InvoiceIssuerName": provider.invoice_issuer_name,
        })
    return pa.Table.from_pylist(rows, schema=schema(BILLING_PERIOD))


def _scope(tenant: str, tier: str | None = None) -> str:
    rules = [{"Dimension": "SubAccountId", "Operator": "In", "Values": [tenant]}]
    if tier is not None:
        rules.append({"Dimension": "SkuId", "Operator": "In", "Values": [tier]})
    return json.dumps({"InclusionOperator": "And", "Inclusions": rules})


def contract_commitment_table(con: duckdb.DuckDBPyConnection,
                              documents: Sequence[StoredInvoice], *,
                              tenants: Mapping[str, Tenant], provider: Provider,
                              created: datetime) -> pa.Table:
    """A row for each contract commitment the documents' charges apply to: the plan's
    minimum spend of each billed month (a discontinuous spend commitment the true-up
    settles) and each reservation held (a continuous usage commitment of GPU-hours). A
    month's commitments are stated as billed in all: its invoice plus the adjustment notes
    issued for it so far (an adjustment note in a later month names them too)."""
    closed = {p for (p,) in con.execute("SELECT period FROM period_closes").fetchall()}
    months = sorted({(s.invoice.tenant, s.invoice.period) for s in documents})
    rows = []
    for tenant_name, period in months:
        tenant = tenants[tenant_name]
        billed = [s for s in lifecycle.stored(con, period) if s.invoice.tenant == tenant_name]
        if any(s.status is Status.FINAL for s in billed):
            billed = [s for s in billed if s.status is Status.FINAL]
        latest = max(billed, key=lambda s: s.finalized_at or created)
        invoice = latest.invoice
        start, end = month_bounds(period)
        common = {
            "BillingCurrency": invoice.currency, "ContractId": contract_id(tenant_name),
            "ContractPeriodStart": tenant.start,
            "ContractPeriodEnd": min(tenant.end, end) if tenant.end else end,
            "ContractCommitmentLastUpdated": latest.finalized_at or created,
            "ContractCommitmentOfferCategory": "Public",
            "ContractCommitmentPaymentInterval": "Monthly",
            "ContractCommitmentPaymentModel": "No Upfront",
            "InvoiceIssuerName": provider.invoice_issuer_name,
            "ServiceProviderName": provider.service_provider_name,
        }
        if invoice.minimum_commitment:
            discount = 1 - invoice.discount_factor
            rows.append({
                **common, "ContractCommitmentId": minimum_commitment_id(invoice),
                "ContractCommitmentApplicability": _scope(tenant_name),
                "ContractCommitmentBenefitCategory": "Discount" if discount else "Other",
                "ContractCommitmentCategory": "Spend",
                "ContractCommitmentCost": invoice.minimum_commitment,
                "ContractCommitmentCreated": max(tenant.start, start),
                "ContractCommitmentDescription":
                    f"plan {invoice.plan} minimum spend for {period}",
                "ContractCommitmentDiscountPercentage": discount or None,
                "ContractCommitmentDurationType": "1 Month",
                "ContractCommitmentFulfillmentInterval": "Monthly",
                "ContractCommitmentLifecycleStatus": "Expired" if period in closed else "Active",
                "ContractCommitmentModel": "Discontinuous",
                "ContractCommitmentPeriodStart": max(tenant.start, start),
                "ContractCommitmentPeriodEnd": min(tenant.end, end) if tenant.end else end,
                "ContractCommitmentQuantity": None, "ContractCommitmentType": "Minimum Spend",
                "ContractCommitmentUnit": None,
            })
        held = {h.reservation_id: h.reservation for s in billed for h in s.invoice.reservations}
        totals: dict[str, list[Decimal]] = {}
        for s in billed:
            for line in s.invoice.lines:
                if line.kind is LineKind.RESERVATION and line.reservation_id is not None:
                    total = totals.setdefault(line.reservation_id, [ZERO, ZERO])
                    total[0] += line.amount
                    total[1] += line.quantity
        for rid, (cost, quantity) in sorted(totals.items()):
            r = held[rid]
            ended = r.end is not None and r.end <= end and period in closed
            rows.append({
                **common, "ContractCommitmentId": rid,
                "ContractCommitmentApplicability": _scope(tenant_name, r.tier),
                "ContractCommitmentBenefitCategory": "Availability",
                "ContractCommitmentCategory": "Usage", "ContractCommitmentCost": cost,
                "ContractCommitmentCreated": r.start,
                "ContractCommitmentDescription": reservation_name(r),
                "ContractCommitmentDiscountPercentage": None,
                "ContractCommitmentDurationType": "1 Month",
                "ContractCommitmentFulfillmentInterval": "Hourly",
                "ContractCommitmentLifecycleStatus": "Expired" if ended else "Active",
                "ContractCommitmentModel": "Continuous",
                "ContractCommitmentPeriodStart": max(r.start, start),
                "ContractCommitmentPeriodEnd": min(r.end, end) if r.end else end,
                "ContractCommitmentQuantity": quantity,
                "ContractCommitmentType": "Capacity Reservation",
                "ContractCommitmentUnit": GPU_HOURS,
            })
    return pa.Table.from_pylist(rows, schema=schema(CONTRACT_COMMITMENT))


def focus_datasets(con: duckdb.DuckDBPyConnection, period: str, cost_and_usage: pa.Table, *,
                   tenants: Mapping[str, Tenant], provider: Provider,
                   created: datetime) -> list[Dataset]:
    """The period's four datasets: Cost and Usage (given), Invoice Detail, Billing Period and
    Contract Commitment."""
    documents = lifecycle.period_documents(con, period)
    return [
        Dataset("CostAndUsage", "focus", COLUMNS, cost_and_usage),
        Dataset("InvoiceDetail", "focus-invoice-detail", INVOICE_DETAIL,
                invoice_detail_table(documents, period, provider=provider, created=created)),
        Dataset("BillingPeriod", "focus-billing-period", BILLING_PERIOD,
                billing_period_table(con, period, provider=provider, created=created)),
        Dataset("ContractCommitment", "focus-contract-commitment", CONTRACT_COMMITMENT,
                contract_commitment_table(con, documents, tenants=tenants, provider=provider,
                                          created=created)),
    ]



def write_focus_export(
    con: duckdb.DuckDBPyConnection,
    period: str,
    folder: Path,
    *,
    tenants: Mapping[str, Tenant],
    cards: Sequence[RateCard],
    provider: Provider | None = None,
    created: datetime | None = None,
) -> list[Path]:
    """The period's FOCUS datasets in `folder`: `<stem>.parquet`, `<stem>.csv` and
    `<stem>.metadata.json` for Cost and Usage (`focus`) and the companions
    (`focus-invoice-detail`, `focus-billing-period`, `focus-contract-commitment`). Every table
    is built before the first file is written, and each file is written atomically."""
    provider = provider or Provider()
    created = created or datetime.now(UTC)
    table = focus_table(con, period, tenants=tenants, cards=cards, provider=provider)
    datasets = focus_datasets(con, period, table, tenants=tenants, provider=provider,
                              created=created)
    written = []
    for dataset in datasets:
        meta = metadata(dataset.dataset_id, dataset.columns, dataset.table, period, created)
        parquet = folder / f"{dataset.stem}.parquet"
        with atomic_open(parquet) as handle:
            pq.write_table(dataset.table.replace_schema_metadata({
                "focus_version": FOCUS_VERSION, "focus_metadata": json.dumps(meta)}),
                handle, compression="zstd")
        written += [parquet,
                    atomic_write(folder / f"{dataset.stem}.csv", csv_text(dataset.table)),
                    atomic_write(folder / f"{dataset.stem}.metadata.json",
                                 json.dumps(meta, indent=2, sort_keys=True) + "\n")]
    return written
