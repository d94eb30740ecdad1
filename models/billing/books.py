"""The platform's books: who issues the documents, and the ledger accounts the journal posts to.

Read from one YAML file (`finance.yaml`, CHARGEBACK_FINANCE), validated as a whole: every
problem is reported at once with file and key, and a hardware tier of the rate cards without a
revenue account is an error, never a line posted to a guessed account."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.billing.pricing import LineKind
from models.billing.rate_cards import Party, RateCard, _party, _Problems, _text, _unknown_keys
from models.errors import UserError
from models.files import read_yaml

ACCOUNT_KEYS = ("reservations", "base_fees", "true_ups", "discounts", "prepaid_credits",
                "adjustments", "tax")
"""Accounts besides revenue per tier; each line kind posts to one (see `Accounts.for_line`)."""


@dataclass(frozen=True)
class Accounts:
    """Ledger account codes the journal credits (or, with a negative amount, reduces)."""

    revenue: Mapping[str, str]
    """On-demand usage and band fees, per hardware tier."""
    reservations: str
    base_fees: str
    true_ups: str
    discounts: str
    prepaid_credits: str
    adjustments: str
    """Every line of a credit or debit note: corrections of closed periods."""
    tax: str
    platform_cost_center: str
    """The cost center of the platform's own lines (revenue side)."""

    def for_line(self, kind: LineKind, tier: str | None) -> str:
        """The account an invoice line of `kind` (and hardware tier) posts to."""
        if kind in (LineKind.USAGE, LineKind.BAND_FEE):
            if tier is None or tier not in self.revenue:
                raise UserError(f"ledger accounts: no revenue account for hardware tier "
                                f"{tier!r}; add it under ledger.accounts.revenue")
            return self.revenue[tier]
        return {
            LineKind.RESERVATION: self.reservations, LineKind.BASE_FEE: self.base_fees,
            LineKind.TRUE_UP: self.true_ups, LineKind.DISCOUNT: self.discounts,
            LineKind.CREDIT: self.prepaid_credits, LineKind.TAX: self.tax,
        }[kind]


@dataclass(frozen=True)
class Books:
    issuer: Party
    accounts: Accounts
    source: str = ""


def load_books(path: Path, cards: Sequence[RateCard] = ()) -> Books:
    """The finance file: `issuer:` (legal name, address, tax id, e-mail) and `ledger:` (the
    platform's cost center and account codes). Every tier of `cards` needs a revenue account."""
    doc = read_yaml(path)
    p = _Problems(str(path))
    if not isinstance(doc, Mapping):
        raise UserError(f"{path}: expected a mapping with `issuer` and `ledger`")
    _unknown_keys(p, "", doc, ["issuer", "ledger"])
    issuer_doc = _mapping_of(p, "issuer", doc.get("issuer"))
    _unknown_keys(p, "issuer", issuer_doc, ["legal_name", "address", "tax_id", "email"])
    issuer = _party(p, "issuer", issuer_doc)
    ledger = _mapping_of(p, "ledger", doc.get("ledger"))
    _unknown_keys(p, "ledger", ledger, ["platform_cost_center", "accounts"])
    cost_center = _text(p, "ledger.platform_cost_center", ledger.get("platform_cost_center"),
                        required=True)
    raw = _mapping_of(p, "ledger.accounts", ledger.get("accounts"))
    _unknown_keys(p, "ledger.accounts", raw, ["revenue", *ACCOUNT_KEYS])
    codes = {key: _text(p, f"ledger.accounts.{key}", raw.get(key), required=True)
             for key in ACCOUNT_KEYS}
    revenue_doc = _mapping_of(p, "ledger.accounts.revenue", raw.get("revenue"))
    revenue = {str(tier): _text(p, f"ledger.accounts.revenue.{tier}", code, required=True)
               for tier, code in revenue_doc.items()}
    for tier in sorted({t.name for card in cards for t in card.tiers} - set(revenue)):
        p.add(f"ledger.accounts.revenue.{tier}", "missing: every hardware tier of the rate "
              "cards needs a revenue account")
    if p.items or issuer is None or cost_center is None:
        raise UserError(p.items or [f"{path}: incomplete"])
    return Books(issuer, Accounts(
        revenue={tier: code for tier, code in revenue.items() if code is not None},
        platform_cost_center=cost_center,
        **{key: code for key, code in codes.items() if code is not None}), str(path))


def _mapping_of(p: _Problems, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        p.add(key, "missing" if value is None else
              f"must be a mapping, got {type(value).__name__}")
        return {}
    return value
