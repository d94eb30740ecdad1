"""Billing: monthly drafts, finalization on close, adjustments, exports."""

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from models.billing import lifecycle
from models.billing.exports import write_invoice_files, write_period_files
from models.billing.focus import FOCUS_VERSION, provider_of
from models.billing.focus_datasets import write_focus_export
from models.billing.invoices import DocumentKind
from models.billing.period import UnknownTenants, price_period
from models.billing.rate_cards import month_bounds
from models.ledger import warehouse
from pipelines.ingest.assets import gpu_usage_hourly
from pipelines.partitions import MONTHLY, partition_period
from pipelines.resources import BillingConfigResource, OutputsResource, WarehouseResource


class InvoicesConfig(dg.Config):
    close: bool = False
    """Finalize the period: numbers and hashes; the invoices never change afterwards."""


def _now() -> datetime:
    return datetime.now(UTC)


@dg.asset(partitions_def=MONTHLY, group_name="billing", deps=[gpu_usage_hourly])
def tenant_bills(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
) -> dg.MaterializeResult:
    """Draft invoices for the month (or adjustment notes once it is closed)."""
    period = partition_period(context)
    start, end = month_bounds(period)
    card = billing.rate_card(start.date())
    tenants = billing.tenants()
    with warehouse_db.connect() as con:
        # The ingest's blocking check passed each day it loaded and recorded what it checked;
        # only a day changed since (or never checked) is checked again, so no bill counts a
        # day that breaks conservation.
        unconfirmed = warehouse.unconfirmed_days(con, start.date(),
                                                 end.date() - timedelta(days=1))
        violations = [
            v for day in unconfirmed for v in warehouse.check_conservation(con, day, 1)
        ]
        if violations:
            raise dg.Failure(
                description=f"GPU-seconds are not conserved in {period}: no bill is computed "
                "until the broken days are fixed and re-ingested",
                metadata={"first_violations": "\n".join(map(str, violations[:10]))},
            )
        try:
            invoices = price_period(
                con, card, tenants, period,
                credit_available=lambda tenant: tenant.credit_granted_before(end)
                - lifecycle.credit_spent_before(con, tenant.name, period),
            )
        except UnknownTenants as error:
            raise dg.Failure(
                description=f"usage of tenants missing from {billing.tenants_path}",
                metadata={"tenants": str(error)},
            ) from None
        digest = hashlib.sha256(billing.digest().encode()).hexdigest()
        inputs = lifecycle.inputs_hash(con, start, end, digest)
        counts = lifecycle.write_drafts(con, period, invoices, inputs, _now(),
                                        parties=billing.parties())
    total = sum((i.total for i in invoices), start=0)
    return dg.MaterializeResult(metadata={
        **counts, "tenants": len(invoices), "draft_total": str(total),
        "days_rechecked_for_conservation": len(unconfirmed),
        "inputs_hash": inputs, "rate_card_version": card.version,
    })


@dg.asset(partitions_def=MONTHLY, group_name="billing", deps=[tenant_bills])
def invoices(
    context: dg.AssetExecutionContext, config: InvoicesConfig, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """The month's invoices; with `close`, drafts become final invoices with numbers."""
    period = partition_period(context)
    with warehouse_db.connect() as con:
        finalized = lifecycle.close_period(con, period, _now()) if config.close else []
        closed = lifecycle.is_closed(con, period)
        rows = con.execute(
            "SELECT status, kind, count(*), sum(total) FROM invoices WHERE period = ? "
            "GROUP BY ALL ORDER BY ALL", [period]).fetchall()
    return dg.MaterializeResult(metadata={
        "finalized": len(finalized),
        "closed": closed,
        **{f"{status}_{kind}": f"{n} totalling {total}" for status, kind, n, total in rows},
    })


@dg.asset(partitions_def=MONTHLY, group_name="billing", deps=[invoices])
def invoice_exports(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
    outputs: OutputsResource,
) -> dg.MaterializeResult:
    """PDF, CSV and JSON per document of the month, its invoice register and journal, under
    exports/<period>/. A credit or debit note correcting the month is written there too, as
    soon as it is issued (it is in the register and journal of the month it is issued in)."""
    period = partition_period(context)
    folder = Path(outputs.exports_path) / period
    books = billing.books()
    with warehouse_db.connect() as con:
        documents = lifecycle.period_documents(con, period)
        listed = {s.invoice_id for s in documents}
        notes = [s for s in lifecycle.stored(con, period)
                 if s.kind is DocumentKind.ADJUSTMENT and s.invoice_id not in listed]
    written = write_invoice_files([*documents, *notes], folder, prune_drafts=True)
    written += write_period_files(documents, period, folder,
                                  books.accounts if books else None)
    return dg.MaterializeResult(metadata={
        "files": len(written), "folder": str(folder),
        "journal": "written" if books else "no finance file (CHARGEBACK_FINANCE): no ledger "
                                           "accounts to post to"})


@dg.asset(partitions_def=MONTHLY, group_name="billing", deps=[invoices])
def focus_export(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    billing: BillingConfigResource,
    outputs: OutputsResource,
) -> dg.MaterializeResult:
    """The month's FOCUS 1.4 datasets (Parquet and CSV): cost and usage, invoice detail,
    billing period, contract commitment."""
    period = partition_period(context)
    folder = Path(outputs.exports_path) / period
    with warehouse_db.connect() as con:
        written = write_focus_export(con, period, folder, tenants=billing.tenants(),
                                     cards=billing.rate_cards(),
                                     provider=provider_of(billing.books()))
    return dg.MaterializeResult(metadata={
        "files": ", ".join(p.name for p in written), "folder": str(folder),
        "focus_version": FOCUS_VERSION,
    })
