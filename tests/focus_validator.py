"""A FOCUS 1.4 validator written from the specification's text, for the tests.

`validate(datasets, conditions)` checks a period's Cost and Usage dataset and its companions
(Invoice Detail, Billing Period, Contract Commitment) column by column and rule by rule, and
returns every violation as a sentence naming the dataset, the row and the rule. The column
facts (feature level, nulls, type, allowed values, condition) are in
tests/fixtures/focus/focus-1.4.json; the row and cross-column rules are below, each with the
requirement it checks quoted or paraphrased from the 1.4 text (CC BY 4.0, FinOps Foundation).

`conditions` are the operating-model conditions that hold for the data generator ("includes
commitment discounts", ...): a Conditional column is required exactly when its condition
holds. Nothing here imports the code under test."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

SPEC = json.loads((Path(__file__).parent / "fixtures" / "focus" / "focus-1.4.json").read_text())
COLUMNS = {name: {c["name"]: c for c in columns} for name, columns in SPEC["datasets"].items()}
CUSTOM = SPEC["custom_column_prefix"]
ARROW_TYPES = {"Decimal": pa.types.is_decimal, "String": pa.types.is_string,
               "JSON": pa.types.is_string, "Date/Time": pa.types.is_timestamp}
UNITS = SPEC["unit_format"]
ZERO = Decimal(0)


class Violations:
    """Collects violations; at most `limit` per rule, so one broken rule cannot flood."""

    def __init__(self, limit: int = 20) -> None:
        self.items: list[str] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.limit = limit

    def add(self, dataset: str, rule: str, where: str, detail: str) -> None:
        self.counts[rule] += 1
        if self.counts[rule] <= self.limit:
            self.items.append(f"{dataset}: {where}: [{rule}] {detail}")


def _json(value: str) -> Any:
    return json.loads(value, parse_float=Decimal)


def _after(a: Any, b: Any) -> bool:
    """a > b for two UTC date/times; False when either is missing or naive (reported
    elsewhere), so one broken column does not stop the other checks."""
    return (isinstance(a, datetime) and isinstance(b, datetime) and a.tzinfo is not None
            and b.tzinfo is not None and a > b)


# --- attributes ---------------------------------------------------------------------------

_BASE = re.compile(r"[A-Z][A-Za-z]*|[KMGTPE]i?[bB]|[bB]")


def unit_problem(unit: str) -> str | None:
    """UnitFormat: base units from the allowed data-size abbreviations and time-unit names, or
    capitalized nouns; a hyphen joins the two base units of a compound unit (`GB-Hours`), a
    slash a ratio (`GB/Hour`); an optional leading positive integer quantity
    (`1000 Tokens`). Anything else (spaces inside a unit, lower-case words) is not the format."""
    text = unit
    match = re.fullmatch(r"([1-9][0-9]*) (.+)", text)
    if match:
        text = match[2]
    numerator, _, denominator = text.partition("/")
    parts = numerator.split("-")
    if denominator:
        denominator_match = re.fullmatch(r"(?:[1-9][0-9]* )?(.+)", denominator)
        assert denominator_match is not None
        parts.append(denominator_match[1])
    if len(numerator.split("-")) > 2:
        return "a compound unit joins exactly two base units"
    for part in parts:
        if not _BASE.fullmatch(part):
            return f"{part!r} is not a base unit (a capitalized noun or an allowed abbreviation)"
        if (part.lower() in {u.lower() for u in UNITS["time_units"]}
                and part not in UNITS["time_units"]):
            return f"time unit {part!r} is not spelled as the allowed names"
    return None


def _json_object_problem(value: str) -> tuple[Any, str | None]:
    """JsonObjectFormat: a valid JSON object."""
    try:
        doc = _json(value)
    except ValueError as error:
        return None, f"not valid JSON: {error}"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    return doc, None


def _custom_keys(keys: Collection[str], allowed: Collection[str]) -> list[str]:
    """Property keys must begin with x_ unless FOCUS defines them."""
    return [k for k in keys if k not in allowed and not k.startswith(CUSTOM)]


# --- dataset-level checks -----------------------------------------------------------------

def _columns(v: Violations, dataset: str, table: pa.Table, conditions: Collection[str]) -> None:
    spec = COLUMNS[dataset]
    names = table.column_names
    for column in spec.values():
        present = column["name"] in names
        if column["feature_level"] == "Mandatory" and not present:
            v.add(dataset, "presence", column["name"], "Mandatory column missing")
        if (column["feature_level"] == "Conditional" and column["condition"] in conditions
                and not present):
            v.add(dataset, "presence", column["name"],
                  f"Conditional column missing although the data {column['condition']}")
    first_custom = next((i for i, n in enumerate(names) if n.startswith(CUSTOM)), len(names))
    for i, name in enumerate(names):
        field = table.schema.field(name)
        if name.startswith(CUSTOM):
            if not re.fullmatch(r"x_[A-Z][A-Za-z0-9]*", name):
                v.add(dataset, "naming", name, "custom column not x_ followed by PascalCase")
            continue
        if name not in spec:
            v.add(dataset, "naming", name, "neither a FOCUS column of this dataset nor x_")
            continue
        if i > first_custom:
            v.add(dataset, "ordering", name, "FOCUS column after a custom column")
        kind = spec[name]["data_type"]
        if not ARROW_TYPES[kind](field.type):
            v.add(dataset, "type", name, f"{kind} column stored as {field.type}")
        elif kind == "Date/Time" and field.type.tz not in ("UTC", "+00:00"):
            v.add(dataset, "type", name, f"Date/Time not in UTC ({field.type})")


def _values(v: Violations, dataset: str, rows: list[dict[str, Any]]) -> None:
    """Null rules, allowed values, JSON objects, currency codes, unit format, no empty
    strings (NullHandling: a missing value is null, never an empty string)."""
    spec = COLUMNS[dataset]
    for n, row in enumerate(rows):
        for name, value in row.items():
            column = spec.get(name)
            if column is None:
                continue
            where = f"row {n} {name}"
            if value is None:
                if not column["allows_nulls"]:
                    v.add(dataset, "nulls", where, "null in a column that allows no nulls")
                continue
            if isinstance(value, str) and not value.strip():
                v.add(dataset, "null handling", where, "empty string instead of null")
                continue
            if "allowed_values" in column and value not in column["allowed_values"]:
                v.add(dataset, "allowed values", where, f"{value!r} is not an allowed value")
            if column["data_type"] == "JSON":
                _, problem = _json_object_problem(value)
                if problem:
                    v.add(dataset, "JSON object format", where, problem)
            fmt = column.get("value_format")
            if fmt == "CurrencyCode" and not re.fullmatch(r"[A-Z]{3}", value):
                v.add(dataset, "currency code format", where, f"{value!r} is not ISO 4217")
            if fmt == "UnitFormat":
                problem = unit_problem(value)
                if problem:
                    v.add(dataset, "unit format", where, f"{value!r}: {problem}")
            if isinstance(value, datetime) and value.tzinfo is None:
                v.add(dataset, "date/time format", where, "naive date/time (not UTC)")


# --- Cost and Usage -----------------------------------------------------------------------

PRICED = ("SkuId", "SkuPriceId", "PricingQuantity", "PricingUnit", "ListUnitPrice",
          "ContractedUnitPrice", "PricingCategory")


def _cost_and_usage(v: Violations, rows: list[dict[str, Any]]) -> None:
    ds = "CostAndUsage"
    subcategories = SPEC["service_subcategories"]
    purchases_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("ChargeCategory") == "Purchase" and row.get("CommitmentDiscountId"):
            purchases_of[row["CommitmentDiscountId"]].add(row.get("SkuPriceId") or "")
    list_prices: dict[str, set[Decimal]] = defaultdict(set)
    for n, row in enumerate(rows):
        g = row.get
        w = f"row {n} ({g('ChargeDescription')})"
        category, correction = g("ChargeCategory"), g("ChargeClass") == "Correction"
        # ServiceSubcategory: MUST be a subcategory of the row's ServiceCategory.
        parent = subcategories.get(g("ServiceCategory"))
        if parent is not None and g("ServiceSubcategory") not in parent:
            v.add(ds, "ServiceSubcategory", w, f"{g('ServiceSubcategory')!r} is not a "
                  f"subcategory of {g('ServiceCategory')!r}")
        # ChargeFrequency: MUST NOT be "Usage-Based" when ChargeCategory is "Purchase".
        if category == "Purchase" and g("ChargeFrequency") == "Usage-Based":
            v.add(ds, "ChargeFrequency", w, "a Purchase is never Usage-Based")
        # SkuId, SkuPriceId, PricingQuantity/Unit, List/ContractedUnitPrice, PricingCategory:
        # MUST NOT be null when ChargeCategory is Usage or Purchase and ChargeClass is not
        # Correction; MUST be null when ChargeCategory is Tax.
        if category in ("Usage", "Purchase") and not correction:
            for name in PRICED:
                if g(name) is None:
                    v.add(ds, "priced charges", w, f"{name} null on a {category} charge")
        if category == "Tax":
            for name in PRICED:
                if g(name) is not None:
                    v.add(ds, "tax charges", w, f"{name} must be null on a Tax charge")
        # PricingQuantity, ListUnitPrice, ContractedUnitPrice, PricingCategory,
        # CommitmentDiscountQuantity: MUST be null when SkuPriceId is null.
        if g("SkuPriceId") is None:
            for name in ("PricingQuantity", "ListUnitPrice", "ContractedUnitPrice",
                         "PricingCategory", "CommitmentDiscountQuantity"):
                if g(name) is not None:
                    v.add(ds, "SkuPriceId null", w, f"{name} set without a SkuPriceId")
        # ConsumedQuantity / ConsumedUnit: null unless Usage; null when the commitment
        # discount is Unused; not null on (non-correction) Usage otherwise; together.
        unused = g("CommitmentDiscountStatus") == "Unused"
        if (category != "Usage" or unused) and g("ConsumedQuantity") is not None:
            v.add(ds, "ConsumedQuantity", w, "set on a charge that is not used usage")
        elif category == "Usage" and not unused and not correction and (
                g("ConsumedQuantity") is None):
            v.add(ds, "ConsumedQuantity", w, "null on a Usage charge")
        if (g("ConsumedQuantity") is None) != (g("ConsumedUnit") is None):
            v.add(ds, "ConsumedUnit", w, "ConsumedUnit and ConsumedQuantity are set together")
        # ListCost / ContractedCost: MUST equal the product of the unit price and
        # PricingQuantity when both are not null; unit prices are non-negative.
        for cost, price in (("ListCost", "ListUnitPrice"),
                            ("ContractedCost", "ContractedUnitPrice")):
            if g(price) is not None and g("PricingQuantity") is not None and (
                    g(cost) != g(price) * g("PricingQuantity")):
                v.add(ds, cost, w, f"{cost} {g(cost)} is not {price} x PricingQuantity")
            if g(price) is not None and g(price) < 0:
                v.add(ds, price, w, "negative unit price")
        if g("SkuPriceId") is not None and g("ListUnitPrice") is not None and not correction:
            list_prices[g("SkuPriceId")].add(g("ListUnitPrice"))
        # ChargeClass: "Correction" only; charge periods inside the billing period unless a
        # correction of a previous one; periods start before they end.
        if not _after(g("ChargePeriodEnd"), g("ChargePeriodStart")):
            v.add(ds, "ChargePeriod", w, "ChargePeriodStart is not before ChargePeriodEnd")
        if not _after(g("BillingPeriodEnd"), g("BillingPeriodStart")):
            v.add(ds, "BillingPeriod", w, "BillingPeriodStart is not before BillingPeriodEnd")
        if not correction and (_after(g("BillingPeriodStart"), g("ChargePeriodStart"))
                               or _after(g("ChargePeriodEnd"), g("BillingPeriodEnd"))):
            v.add(ds, "ChargePeriod", w, "charge period outside its billing period")
        # Commitment discounts: Category, Type and Name follow CommitmentDiscountId; Status is
        # null without one and not null on a Usage charge with one.
        has_cd = g("CommitmentDiscountId") is not None
        for name in ("CommitmentDiscountCategory", "CommitmentDiscountType",
                     "CommitmentDiscountName"):
            if (g(name) is not None) != has_cd:
                v.add(ds, name, w, f"{name} must be set exactly when CommitmentDiscountId is")
        if not has_cd and g("CommitmentDiscountStatus") is not None:
            v.add(ds, "CommitmentDiscountStatus", w, "status without a commitment discount")
        if has_cd and category == "Usage" and g("CommitmentDiscountStatus") is None:
            v.add(ds, "CommitmentDiscountStatus", w, "null on a commitment discount's usage")
        # CommitmentDiscountQuantity: not null for Usage or Purchase with a commitment
        # discount (unless a correction), null in all other cases; Unit follows Quantity.
        needs_quantity = has_cd and category in ("Usage", "Purchase")
        if needs_quantity and not correction and g("CommitmentDiscountQuantity") is None:
            v.add(ds, "CommitmentDiscountQuantity", w, "null on a commitment discount charge")
        if not needs_quantity and g("CommitmentDiscountQuantity") is not None:
            v.add(ds, "CommitmentDiscountQuantity", w, "set on a charge it does not apply to")
        if (g("CommitmentDiscountQuantity") is None) != (g("CommitmentDiscountUnit") is None):
            v.add(ds, "CommitmentDiscountUnit", w, "Unit and Quantity are set together")
        # PricingCategory: not "Committed" on the purchase of a commitment; "Committed" only
        # on charges a commitment discount applies to. EffectiveCost is 0 on a purchase that
        # covers other charges.
        if category == "Purchase" and has_cd:
            if g("PricingCategory") == "Committed":
                v.add(ds, "PricingCategory", w, "a commitment purchase is not Committed")
            if g("EffectiveCost") != 0:
                v.add(ds, "EffectiveCost", w, "a commitment purchase's EffectiveCost is 0")
        if g("PricingCategory") == "Committed" and (not has_cd or category == "Purchase"):
            v.add(ds, "PricingCategory", w, "Committed without a commitment discount's usage")
        # 1.4: CommitmentDiscountId MUST equal ResourceId when the charge is the purchase of
        # that commitment discount, or its unused portion.
        if has_cd and (category == "Purchase" or unused) and not correction and (
                g("ResourceId") != g("CommitmentDiscountId")):
            v.add(ds, "CommitmentDiscountId = ResourceId", w,
                  f"ResourceId {g('ResourceId')!r} is not the commitment discount "
                  f"{g('CommitmentDiscountId')!r} on its purchase or unused portion")
        # List and contracted unit prices exclude commitment discounts: covered usage is
        # priced at its own SKU price, not at the commitment's purchase price.
        if g("CommitmentDiscountStatus") == "Used" and g("SkuPriceId") in purchases_of.get(
                g("CommitmentDiscountId"), ()):
            v.add(ds, "unit prices exclude commitment discounts", w,
                  "covered usage carries the commitment purchase's SKU price "
                  f"{g('SkuPriceId')!r} instead of its own list price")
        # Capacity reservations: Status null when Id is null, not null on Usage with one;
        # Id not null on the unused portion.
        has_cr = g("CapacityReservationId") is not None
        if not has_cr and g("CapacityReservationStatus") is not None:
            v.add(ds, "CapacityReservationStatus", w, "status without a capacity reservation")
        if has_cr and category == "Usage" and g("CapacityReservationStatus") is None:
            v.add(ds, "CapacityReservationStatus", w, "null on a capacity reservation's usage")
        if g("CapacityReservationStatus") == "Unused" and not has_cr:
            v.add(ds, "CapacityReservationId", w, "unused capacity without its reservation")
        _eligibility(v, w, row)
        _contract_applied(v, w, row)
        # Resources: a MIG instance or GPU has a name and a type.
        if g("ResourceId") is not None and not (g("ResourceName") and g("ResourceType")):
            v.add(ds, "ResourceName/ResourceType", w, "resource without a name and type")
        # InvoiceDetailId identifies a line of an invoice: never without its InvoiceId.
        if g("InvoiceDetailId") is not None and g("InvoiceId") is None:
            v.add(ds, "InvoiceDetailId", w, "InvoiceDetailId without an InvoiceId")
    # A SkuPriceId is one price: the same list unit price wherever it appears.
    for sku_price, prices in list_prices.items():
        if len(prices) > 1:
            v.add(ds, "SkuPriceId", sku_price, f"one SKU price with list prices {sorted(prices)}")
    _commitment_totals(v, rows)


def _eligibility(v: Violations, w: str, row: Mapping[str, Any]) -> None:
    """CommitmentProgramEligibilityDetails (new in 1.4): a JSON object with a non-empty
    CommitmentPrograms array of objects with a string ProgramType; other keys x_; one
    ProgramType equals CommitmentDiscountType when that is not null; not null on a charge
    eligible for a commitment program, which a covered charge is."""
    ds = "CostAndUsage"
    value = row.get("CommitmentProgramEligibilityDetails")
    if value is None:
        if row.get("CommitmentDiscountStatus") == "Used":
            v.add(ds, "CommitmentProgramEligibilityDetails", w,
                  "null on usage a commitment program covered")
        return
    doc, problem = _json_object_problem(value)
    if problem:
        return  # reported as a JSON object format violation
    if _custom_keys(doc, ["CommitmentPrograms"]):
        v.add(ds, "CommitmentProgramEligibilityDetails", w, "top-level keys must be x_")
    programs = doc.get("CommitmentPrograms")
    if not isinstance(programs, list) or not programs:
        v.add(ds, "CommitmentProgramEligibilityDetails", w,
              "CommitmentPrograms must be a non-empty array")
        return
    types = []
    for entry in programs:
        if not isinstance(entry, dict) or not isinstance(entry.get("ProgramType"), str):
            v.add(ds, "CommitmentProgramEligibilityDetails", w,
                  "every CommitmentPrograms entry is an object with a string ProgramType")
            continue
        if _custom_keys(entry, ["ProgramType"]):
            v.add(ds, "CommitmentProgramEligibilityDetails", w, "entry keys must be x_")
        types.append(entry["ProgramType"])
    cd_type = row.get("CommitmentDiscountType")
    if cd_type is not None and cd_type not in types:
        v.add(ds, "CommitmentProgramEligibilityDetails", w,
              f"no ProgramType equals CommitmentDiscountType {cd_type!r}")


def _contract_applied(v: Violations, w: str, row: Mapping[str, Any]) -> None:
    """ContractApplied: a JSON object with an Elements array; each element has string
    ContractId and ContractCommitmentId, an applied cost or quantity, a unit exactly when a
    quantity, other keys x_; ContractCommitmentId matches ResourceId on the purchase of that
    commitment and on its unused portion."""
    ds = "CostAndUsage"
    value = row.get("ContractApplied")
    if value is None:
        return
    doc, problem = _json_object_problem(value)
    if problem:
        return
    if _custom_keys(doc, ["Elements"]):
        v.add(ds, "ContractApplied", w, "top-level keys must be x_")
    elements = doc.get("Elements")
    if not isinstance(elements, list) or not elements:
        v.add(ds, "ContractApplied", w, "Elements must be a non-empty array")
        return
    for element in elements:
        if not isinstance(element, dict):
            v.add(ds, "ContractApplied", w, "every element is an object")
            continue
        if _custom_keys(element, SPEC["contract_applied_element_keys"]):
            v.add(ds, "ContractApplied", w, "element keys must be FOCUS-defined or x_")
        if not (isinstance(element.get("ContractId"), str)
                and isinstance(element.get("ContractCommitmentId"), str)):
            v.add(ds, "ContractApplied", w, "ContractId and ContractCommitmentId are strings")
        cost = element.get("ContractCommitmentAppliedCost")
        quantity = element.get("ContractCommitmentAppliedQuantity")
        unit = element.get("ContractCommitmentAppliedUnit")
        if cost is None and quantity is None:
            v.add(ds, "ContractApplied", w, "an applied cost or an applied quantity")
        for number in (cost, quantity):
            if number is not None and not isinstance(number, Decimal | int):
                v.add(ds, "ContractApplied", w, f"{number!r} is not a decimal number")
        if (quantity is None) != (unit is None):
            v.add(ds, "ContractApplied", w, "AppliedUnit is present exactly with a quantity")
        if unit is not None and unit_problem(unit):
            v.add(ds, "ContractApplied", w, f"AppliedUnit {unit!r}: {unit_problem(unit)}")
        commitment = element.get("ContractCommitmentId")
        purchase_of_it = (row.get("ChargeCategory") == "Purchase"
                          and commitment in (row.get("CommitmentDiscountId"),
                                             row.get("CapacityReservationId")))
        unused_of_it = (row.get("CommitmentDiscountStatus") == "Unused"
                        and commitment == row.get("CommitmentDiscountId"))
        if (purchase_of_it or unused_of_it) and row.get("ChargeClass") != "Correction" and (
                commitment != row.get("ResourceId")):
            v.add(ds, "ContractApplied", w, "ContractCommitmentId does not match ResourceId "
                  "on the purchase or unused portion of that commitment")


def _commitment_totals(v: Violations, rows: list[dict[str, Any]]) -> None:
    """EffectiveCost, per CommitmentDiscountId: the sum over Usage equals the BilledCost of the
    Purchase, and is its Used plus its Unused charges; over the dataset (which holds both the
    purchases and the charges they cover) the sums of EffectiveCost and BilledCost agree."""
    usage: dict[str, Decimal] = defaultdict(lambda: ZERO)
    used_unused: dict[str, Decimal] = defaultdict(lambda: ZERO)
    bought: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in rows:
        cd = row.get("CommitmentDiscountId")
        if cd is None or row.get("ChargeClass") == "Correction":
            continue
        if row.get("ChargeCategory") == "Usage":
            usage[cd] += row.get("EffectiveCost") or ZERO
            if row.get("CommitmentDiscountStatus") in ("Used", "Unused"):
                used_unused[cd] += row.get("EffectiveCost") or ZERO
        elif row.get("ChargeCategory") == "Purchase":
            bought[cd] += row.get("BilledCost") or ZERO
    for cd in sorted(usage.keys() | bought.keys()):
        if usage[cd] != bought[cd]:
            v.add("CostAndUsage", "EffectiveCost", cd, f"usage amortizes {usage[cd]} of a "
                  f"purchase of {bought[cd]}")
        if usage[cd] != used_unused[cd]:
            v.add("CostAndUsage", "EffectiveCost", cd, "usage is not Used plus Unused")
    billed = sum((r.get("BilledCost") or ZERO for r in rows), ZERO)
    effective = sum((r.get("EffectiveCost") or ZERO for r in rows), ZERO)
    if billed != effective:
        v.add("CostAndUsage", "EffectiveCost", "dataset",
              f"sum of EffectiveCost {effective} differs from sum of BilledCost {billed}")


# --- companions -----------------------------------------------------------------------------

def _invoice_detail(v: Violations, rows: list[dict[str, Any]]) -> None:
    ds = "InvoiceDetail"
    seen: set[tuple[str, str]] = set()
    for n, row in enumerate(rows):
        w = f"row {n} ({row.get('InvoiceDetailId')})"
        key = (row.get("InvoiceId"), row.get("InvoiceDetailId"))
        # InvoiceDetailId MUST uniquely identify a record within a given InvoiceId.
        if key in seen:
            v.add(ds, "InvoiceDetailId", w, "not unique within its InvoiceId")
        seen.add(key)
        # ReferenceInvoiceId: the original invoice's id when adjusting one, else its own.
        if row.get("ReferenceInvoiceId") is None:
            continue
        grain = row.get("InvoiceDetailGrain")
        if grain is not None:
            doc, problem = _json_object_problem(grain)
            if not problem and _custom_keys(doc, SPEC["invoice_detail_grain_properties"]):
                v.add(ds, "InvoiceDetailGrain", w, "keys must be FOCUS-defined or x_")
        issued, due = row.get("InvoiceIssueDate"), row.get("PaymentDueDate")
        if _after(issued, due):
            v.add(ds, "PaymentDueDate", w, "due before the invoice was issued")
        if row.get("InvoiceIssueStatus") == "Issued" and issued is None:
            v.add(ds, "InvoiceIssueDate", w, "an issued invoice has an issue date")
        if _after(row.get("InvoiceDetailCreated"), row.get("InvoiceDetailLastUpdated")):
            v.add(ds, "InvoiceDetailLastUpdated", w, "updated before it was created")


def _billing_period(v: Violations, rows: list[dict[str, Any]]) -> None:
    ds = "BillingPeriod"
    for n, row in enumerate(rows):
        if not _after(row.get("BillingPeriodEnd"), row.get("BillingPeriodStart")):
            v.add(ds, "BillingPeriodEnd", f"row {n}", "the period ends before it starts")
        if _after(row.get("BillingPeriodCreated"), row.get("BillingPeriodLastUpdated")):
            v.add(ds, "BillingPeriodLastUpdated", f"row {n}", "updated before created")


def _contract_commitment(v: Violations, rows: list[dict[str, Any]]) -> None:
    ds = "ContractCommitment"
    ids: set[str] = set()
    durations = "|".join(SPEC["duration_time_units"])
    for n, row in enumerate(rows):
        g = row.get
        w = f"row {n} ({g('ContractCommitmentId')})"
        if g("ContractCommitmentId") in ids:
            v.add(ds, "ContractCommitmentId", w, "not unique")
        ids.add(g("ContractCommitmentId"))
        # Cost is not null when Quantity is null, and the other way round.
        if g("ContractCommitmentCost") is None and g("ContractCommitmentQuantity") is None:
            v.add(ds, "ContractCommitmentCost", w, "neither a cost nor a quantity")
        if (g("ContractCommitmentQuantity") is None) != (g("ContractCommitmentUnit") is None):
            v.add(ds, "ContractCommitmentUnit", w, "unit given exactly with a quantity")
        # DurationType: "<positive integer> <time unit>".
        if g("ContractCommitmentDurationType") and not re.fullmatch(
                rf"[1-9][0-9]* ({durations})", g("ContractCommitmentDurationType")):
            v.add(ds, "ContractCommitmentDurationType", w,
                  f"{g('ContractCommitmentDurationType')!r} is not '<n> <time unit>'")
        # A continuous commitment resets within its term, never over the whole of it.
        if g("ContractCommitmentModel") == "Continuous" and g(
                "ContractCommitmentFulfillmentInterval") in ("Full Commitment Period",
                                                              "Total Term"):
            v.add(ds, "ContractCommitmentFulfillmentInterval", w,
                  "a Continuous commitment's interval is not its full term")
        # PaymentInterval MUST be "One-Time" when the payment model is "All Upfront".
        if g("ContractCommitmentPaymentModel") == "All Upfront" and g(
                "ContractCommitmentPaymentInterval") != "One-Time":
            v.add(ds, "ContractCommitmentPaymentInterval", w, "All Upfront is paid One-Time")
        for start, end in (("ContractCommitmentPeriodStart", "ContractCommitmentPeriodEnd"),
                           ("ContractPeriodStart", "ContractPeriodEnd")):
            if g(start) is not None and g(end) is not None and not _after(g(end), g(start)):
                v.add(ds, end, w, "the period ends before it starts")
        if g("ContractCommitmentDiscountPercentage") is not None and not (
                0 <= g("ContractCommitmentDiscountPercentage") <= 1):
            v.add(ds, "ContractCommitmentDiscountPercentage", w, "a fraction from 0 to 1")
        _applicability(v, w, g("ContractCommitmentApplicability"))


def _applicability(v: Violations, w: str, value: str | None) -> None:
    """ContractCommitmentApplicability: IsGlobalScope / IsComplexScope booleans, never both
    true; InclusionOperator and Inclusions required unless one of them is; operators And/Or;
    rules with Dimension, a supported Operator and a Values array; fractions from 0 to 1."""
    ds = "ContractCommitment"
    if value is None:
        return
    doc, problem = _json_object_problem(value)
    if problem:
        return
    scoped = [doc.get(key) for key in ("IsGlobalScope", "IsComplexScope")]
    if any(s is not None and not isinstance(s, bool) for s in scoped):
        v.add(ds, "Applicability", w, "IsGlobalScope / IsComplexScope are booleans")
    if all(scoped):
        v.add(ds, "Applicability", w, "not both global and complex")
    broad = any(scoped)
    if not broad and (doc.get("InclusionOperator") not in ("And", "Or")
                      or not isinstance(doc.get("Inclusions"), list) or not doc["Inclusions"]):
        v.add(ds, "Applicability", w, "a scoped commitment has InclusionOperator and "
              "Inclusions")
    if broad and doc.get("Inclusions"):
        v.add(ds, "Applicability", w, "a global or complex scope has no Inclusions")
    for rule in [*(doc.get("Inclusions") or []), *(doc.get("Exclusions") or [])]:
        if not (isinstance(rule, dict) and isinstance(rule.get("Dimension"), str)
                and rule.get("Operator") in SPEC["applicability_operators"]
                and isinstance(rule.get("Values"), list) and rule["Values"]):
            v.add(ds, "Applicability", w, f"malformed rule {rule!r}")
    fractions = [doc.get("Applicability") or {}]
    fractions += [r.get("Applicability") or {} for r in doc.get("Inclusions") or []
                  if isinstance(r, dict)]
    for applicability in fractions:
        for key in ("Cost", "Usage"):
            share = applicability.get(key)
            if share is not None and not 0 <= share <= 1:
                v.add(ds, "Applicability", w, f"{key} {share} is not a fraction")


# --- across datasets ----------------------------------------------------------------------

def _across(v: Violations, cu: list[dict[str, Any]], detail: list[dict[str, Any]],
            periods: list[dict[str, Any]], commitments: list[dict[str, Any]]) -> None:
    """Invoice Detail joins Cost and Usage on InvoiceIssuerName, InvoiceId and
    InvoiceDetailId, and per invoice both sum BilledCost to the payable amount; Billing
    Period joins on BillingPeriodStart and InvoiceIssuerName; Contract Commitment joins on
    the ContractCommitmentId inside ContractApplied."""
    lines = {(r.get("InvoiceIssuerName"), r.get("InvoiceId"), r.get("InvoiceDetailId"))
             for r in detail}
    billed_cu: dict[str, Decimal] = defaultdict(lambda: ZERO)
    billed_id: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for n, row in enumerate(cu):
        if row.get("InvoiceDetailId") is not None and (
                row.get("InvoiceIssuerName"), row.get("InvoiceId"),
                row["InvoiceDetailId"]) not in lines:
            v.add("CostAndUsage", "Invoice Detail join", f"row {n}",
                  f"{row['InvoiceDetailId']} has no Invoice Detail record")
        if row.get("InvoiceId") is not None:
            billed_cu[row["InvoiceId"]] += row.get("BilledCost") or ZERO
    for row in detail:
        billed_id[row.get("InvoiceId")] += row.get("BilledCost") or ZERO
    for invoice in sorted(billed_cu.keys() | billed_id.keys()):
        if billed_cu[invoice] != billed_id[invoice]:
            v.add("InvoiceDetail", "invoice reconciliation", invoice,
                  f"Cost and Usage bills {billed_cu[invoice]}, Invoice Detail "
                  f"{billed_id[invoice]}")
    known = {(r.get("BillingPeriodStart"), r.get("InvoiceIssuerName")) for r in periods}
    for dataset, rows in (("CostAndUsage", cu), ("InvoiceDetail", detail)):
        for key in sorted({(r.get("BillingPeriodStart"), r.get("InvoiceIssuerName"))
                           for r in rows}, key=str):
            if key not in known:
                v.add(dataset, "Billing Period join", str(key), "no Billing Period record")
    contracts = {r.get("ContractCommitmentId"): r.get("ContractId") for r in commitments}
    for n, row in enumerate(cu):
        if row.get("ContractApplied") is None:
            continue
        doc, problem = _json_object_problem(row["ContractApplied"])
        if problem or not isinstance(doc.get("Elements"), list):
            continue
        for element in doc["Elements"]:
            if not isinstance(element, dict):
                continue
            commitment = element.get("ContractCommitmentId")
            if commitment not in contracts:
                v.add("CostAndUsage", "Contract Commitment join", f"row {n}",
                      f"{commitment!r} is not in the Contract Commitment dataset")
            elif contracts[commitment] != element.get("ContractId"):
                v.add("CostAndUsage", "Contract Commitment join", f"row {n}",
                      f"{commitment!r} belongs to {contracts[commitment]!r}, not "
                      f"{element.get('ContractId')!r}")


def validate(datasets: Mapping[str, pa.Table], conditions: Collection[str]) -> list[str]:
    """Every violation of FOCUS 1.4 in a period's datasets (`CostAndUsage`, `InvoiceDetail`,
    `BillingPeriod`, `ContractCommitment`), at most 20 per rule."""
    v = Violations()
    rows = {name: table.to_pylist() for name, table in datasets.items()}
    for name, table in datasets.items():
        _columns(v, name, table, conditions)
        _values(v, name, rows[name])
    _cost_and_usage(v, rows["CostAndUsage"])
    _invoice_detail(v, rows["InvoiceDetail"])
    _billing_period(v, rows["BillingPeriod"])
    _contract_commitment(v, rows["ContractCommitment"])
    _across(v, rows["CostAndUsage"], rows["InvoiceDetail"], rows["BillingPeriod"],
            rows["ContractCommitment"])
    return v.items


OPERATING_MODEL = (
    "includes commitment discounts", "includes capacity reservations",
    "includes commitment programs", "includes contract commitments",
    "includes provisioned resources",
    "includes provisioned resources and resource type assignment", "includes sub accounts",
    "includes usage measurement", "includes unit pricing", "includes list unit prices",
    "includes negotiated pricing", "includes multiple pricing categories",
    "includes payable invoices", "supports customer input of purchase order numbers",
)
"""What holds for the GPU platform, so which Conditional columns it must write: reservations
are commitment discounts and capacity reservations of a commitment program; plan minimums and
reservations are contract commitments; GPUs and MIG instances are provisioned resources of
two types; tenants are sub accounts; GPU-hours are measured; the rate card publishes SKU list
prices; plans negotiate discounts; on-demand and committed prices differ; invoices are
payable; tenants give purchase order numbers. Not: split cost allocation, availability
zones, regions, tags, several billing or sub account types, pricing and billing currencies
that differ, partially upfront payment."""
