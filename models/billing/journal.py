"""A billing period's journal for the ledger system: balanced double-entry lines per document.

Each registered document (models.billing.register: invoices, credit and debit notes; not
showback statements, not drafts) posts one debit line to the tenant's GL account and cost
center for its total, and credit lines to the platform's accounts (models.billing.books), one
per account the document's lines post to: revenue per hardware tier for on-demand usage and
band fees; reservations, base fees, true-ups, discounts, prepaid credits and tax on their own
accounts; every line of a credit or debit note on the adjustments account.

Lines that reduce a side (a discount, a prepaid credit, a credit note) are posted as negative
amounts on that same side (storno), so each account's turnover is what the documents say and
Σ debits = Σ credits = Σ document totals, per currency, to the cent."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from models.billing.books import Accounts
from models.billing.invoices import DocumentKind, StoredInvoice
from models.billing.register import amount_text, registered
from models.errors import UserError

JOURNAL_COLUMNS = (
    "journal_id", "line_no", "posting_date", "billing_period", "document_number",
    "document_type", "tenant", "account", "cost_center", "description", "debit", "credit",
    "currency")
"""One row per journal line. `posting_date` is the document's issue date; `debit` and
`credit` are exact decimals at the currency's minor unit, one of them zero; a line that
reduces its side is negative on that side (storno)."""

ZERO = Decimal(0)


def journal_rows(documents: Sequence[StoredInvoice], period: str, accounts: Accounts
                 ) -> list[dict[str, str]]:
    """The journal of billing period `period` from its documents (lifecycle.period_documents).

    Every document's tenant needs a GL account and a cost center (the tenants file's
    `billing:` block): a document that has none is reported, all of them at once, and no
    journal is made."""
    missing = [f"{s.stem}: tenant {s.invoice.tenant} has no "
               + ("`billing:` block" if s.parties is None else "cost_center/gl_account")
               + " recorded; the journal cannot debit it"
               for s in registered(documents)
               if s.parties is None or not (s.parties.bill_to.cost_center
                                            and s.parties.bill_to.gl_account)]
    if missing:
        raise UserError(missing)
    rows: list[dict[str, str]] = []
    for stored in registered(documents):
        invoice, parties = stored.invoice, stored.parties
        assert parties is not None, "checked above"
        bill_to = parties.bill_to
        # (account, cost center, description, debit, credit): the tenant's debit first.
        entries = [(bill_to.gl_account or "", bill_to.cost_center or "",
                    f"{stored.document_type.heading} {stored.number} {invoice.tenant} "
                    f"{invoice.period}", invoice.total, ZERO)]
        by_account: dict[str, Decimal] = defaultdict(lambda: ZERO)
        kinds: dict[str, set[str]] = defaultdict(set)
        for x in invoice.lines:
            account = (accounts.adjustments if stored.kind is DocumentKind.ADJUSTMENT
                       else accounts.for_line(x.kind, x.hardware_tier))
            by_account[account] += x.amount
            kinds[account].add(x.kind.value.replace("_", " ")
                               + (f" {x.hardware_tier}" if x.hardware_tier else ""))
        entries += [(account, accounts.platform_cost_center,
                     f"{stored.number}: {', '.join(sorted(kinds[account]))}", ZERO,
                     by_account[account]) for account in sorted(by_account)]
        for account, cost_center, description, debit, credit in entries:
            rows.append({
                "journal_id": f"GPU-{period}", "line_no": str(len(rows) + 1),
                "posting_date": stored.issue_date.isoformat() if stored.issue_date else "",
                "billing_period": invoice.period, "document_number": stored.number or "",
                "document_type": stored.document_type.value, "tenant": invoice.tenant,
                "account": account, "cost_center": cost_center, "description": description,
                "debit": amount_text(debit, invoice.minor_unit),
                "credit": amount_text(credit, invoice.minor_unit),
                "currency": invoice.currency,
            })
    return rows


def journal_csv(documents: Sequence[StoredInvoice], period: str, accounts: Accounts) -> str:
    """The journal as CSV in the JOURNAL_COLUMNS layout."""
    return rows_csv(journal_rows(documents, period, accounts))


def rows_csv(rows: Iterable[Mapping[str, str]]) -> str:
    """Journal rows (from `journal_rows`, or a mart's copy of them) as CSV."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=JOURNAL_COLUMNS, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
