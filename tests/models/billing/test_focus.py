"""The FOCUS 1.4 export and its companion datasets, validated against the specification's rules
(tests/focus_validator.py), tied to the invoices to the cent, and the validator itself shown
to catch each kind of violation on invalid samples."""

import csv
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.billing import lifecycle
from models.billing.focus import FOCUS_VERSION, Provider, focus_table
from models.billing.focus_datasets import focus_datasets, write_focus_export
from models.billing.invoices import Parties
from models.billing.pricing import price_invoice
from models.billing.rate_cards import (
    BillingMode,
    BillingProfile,
    CreditGrant,
    Party,
    Reservation,
    TaxRate,
    load_rate_cards,
    load_tenants,
    month_bounds,
)
from models.ledger import warehouse
from models.ledger.usage import ledger_table, make_sample_id
from tests.focus_validator import OPERATING_MODEL, validate

EXAMPLE = Path(__file__).parents[3] / "examples" / "design-example"
D = Decimal
OCT_CLOSE = datetime(2026, 11, 1, 6, tzinfo=UTC)
LATE_NOTE = datetime(2026, 11, 5, tzinfo=UTC)
EXPORTED = datetime(2026, 11, 20, tzinfo=UTC)
RESERVED_FROM = datetime(2026, 10, 10, tzinfo=UTC)
ISSUER = Party("GPU Platform Ltd.", ("1 Compute Way", "London"), "GB123456789")
PROFILES = {
    "acme": BillingProfile(Party("Acme Corporation Ltd."), BillingMode.CHARGEBACK, 30,
                           "CC-1100", "6100", "PO-42", TaxRate("VAT", D(20))),
    "zen": BillingProfile(Party("Zen Research GmbH"), BillingMode.CHARGEBACK, 45,
                          "CC-1200", "6100", None),
    "lumen": BillingProfile(Party("Lumen team"), BillingMode.SHOWBACK, 0),
}
PARTIES = {name: Parties(ISSUER, profile) for name, profile in PROFILES.items()}


def _rows(tenant: str, node: str, product: str, first: datetime, hours: int,
          model: str, params: float) -> list[dict[str, Any]]:
    out = []
    for hour in range(hours):
        start = first + timedelta(hours=hour)
        out.append({
            "sample_id": make_sample_id(tenant, node, start.isoformat()), "window_start": start,
            "duration_s": 3600.0, "cluster": "example", "node": node,
            "gpu_uuid": f"GPU-{node}-0", "gpu_product": product, "mig_profile": None,
            "gpu_equivalents": 1.0, "tenant": tenant, "namespace": f"team-{tenant}",
            "pod": f"{tenant}-0", "pod_uid": f"uid-{tenant}", "workload_kind": "batch",
            "model": model, "model_params_b": params, "allocated_gpu_seconds": 3600.0,
            "used_gpu_seconds": 1800.0, "memory_used_bytes": None, "source": "test"})
    return out


def _bill(con, card, tenants, period, now):
    start, end = month_bounds(period)
    invoices = [price_invoice(t, card, period, warehouse.tenant_usage_hours(con, t, start, end))
                for _, t in sorted(tenants.items())]
    lifecycle.write_drafts(con, period, invoices, "inputs", now, parties=PARTIES)
    return {i.tenant: i for i in invoices}


@pytest.fixture(scope="module")
def billed(tmp_path_factory):
    """October 2026 of DESIGN.md's example, closed; acme reserves 4 premium GPUs from Oct 10
    (one stays unused every hour), has 1,000.00 of prepaid credit and pays 20% VAT; zen is on
    the enterprise plan's 25,000.00 minimum; lumen is a showback tenant with a day of economy
    GPUs. 10 late GPU-hours of zen arrive after close and yield a debit note in November."""
    tmp = tmp_path_factory.mktemp("focus")
    cards = load_rate_cards(EXAMPLE / "rate-card.yaml")
    card = cards[0]
    tenants = load_tenants(EXAMPLE / "tenants.yaml", cards)
    tenants["acme"] = replace(
        tenants["acme"],
        reservations=(Reservation("premium", D(4), RESERVED_FROM, None),),
        credits=(CreditGrant(D("1000.00"), datetime(2026, 9, 1, tzinfo=UTC)),),
        billing=PROFILES["acme"])
    tenants["zen"] = replace(tenants["zen"], billing=PROFILES["zen"])
    tenants["lumen"] = replace(tenants["zen"], name="lumen", plan="growth",
                               namespaces=("team-lumen",), billing=PROFILES["lumen"])
    con = warehouse.connect(tmp / "warehouse.duckdb")
    warehouse.create_schema(con)
    lumen = tmp / "lumen.parquet"
    pq.write_table(ledger_table(_rows("lumen", "lumen-l4", "NVIDIA L4",
                                      datetime(2026, 10, 3, tzinfo=UTC), 24, "phi-3", 3.8)),
                   lumen)
    warehouse.load_rows(con, card, [EXAMPLE / "usage.parquet", lumen])
    drafts = _bill(con, card, tenants, "2026-10", OCT_CLOSE)
    lifecycle.close_period(con, "2026-10", OCT_CLOSE)
    late = tmp / "late.parquet"
    pq.write_table(ledger_table(_rows("zen", "zen-late", "NVIDIA H100 80GB HBM3",
                                      datetime(2026, 10, 31, 10, tzinfo=UTC), 10,
                                      "mistral-7b", 7.0)), late)
    warehouse.load_rows(con, card, [EXAMPLE / "usage.parquet", lumen, late])
    _bill(con, card, tenants, "2026-10", LATE_NOTE)
    yield con, tenants, cards, drafts, tmp
    con.close()


def _datasets(billed, period: str) -> dict[str, pa.Table]:
    con, tenants, cards, _, _ = billed
    table = focus_table(con, period, tenants=tenants, cards=cards)
    return {d.dataset_id: d.table for d in focus_datasets(
        con, period, table, tenants=tenants, provider=Provider(), created=EXPORTED)}


@pytest.fixture(scope="module")
def october(billed) -> dict[str, pa.Table]:
    return _datasets(billed, "2026-10")


@pytest.fixture(scope="module")
def november(billed) -> dict[str, pa.Table]:
    return _datasets(billed, "2026-11")


def rows(datasets: dict[str, pa.Table], name: str = "CostAndUsage") -> list[dict[str, Any]]:
    return datasets[name].to_pylist()


@pytest.mark.parametrize("period", ["october", "november"])
def test_every_dataset_passes_the_validator(period, request) -> None:
    datasets = request.getfixturevalue(period)
    assert validate(datasets, OPERATING_MODEL) == []
    assert all(datasets[name].num_rows for name in ("CostAndUsage", "InvoiceDetail",
                                                    "BillingPeriod", "ContractCommitment"))


def test_billed_cost_equals_each_document_total_to_the_cent(billed, october) -> None:
    con, _, _, drafts, _ = billed
    totals = dict(con.execute(
        "SELECT invoice_id, total FROM invoices WHERE period = '2026-10' "
        "AND kind = 'invoice'").fetchall())
    by_invoice, by_tenant, by_detail = defaultdict(D), defaultdict(D), defaultdict(D)
    for row in rows(october):
        by_tenant[row["SubAccountId"]] += row["BilledCost"]
        assert row["BilledCost"] == row["BilledCost"].quantize(D("0.01"))
        if row["InvoiceId"] is not None:
            by_invoice[row["InvoiceId"]] += row["BilledCost"]
    for row in rows(october, "InvoiceDetail"):
        by_detail[row["InvoiceId"]] += row["BilledCost"]
    # The showback statement has no invoice id; the invoices sum to their totals.
    assert dict(by_invoice) == dict(by_detail) == {
        k: D(v) for k, v in totals.items() if not k.startswith("STATEMENT")}
    assert dict(by_tenant) == {t: i.total for t, i in drafts.items()}
    assert "STATEMENT-2026-10-lumen" in totals


def test_reservation_is_a_commitment_and_capacity_reservation_whose_resource_it_is(
        october) -> None:
    rid = f"acme/reservations/premium/{RESERVED_FROM:%Y-%m-%dT%H:%M:%SZ}"
    mine = [r for r in rows(october) if r["CommitmentDiscountId"] == rid]
    (purchase,) = [r for r in mine if r["ChargeCategory"] == "Purchase"]
    used = [r for r in mine if r["CommitmentDiscountStatus"] == "Used"]
    unused = [r for r in mine if r["CommitmentDiscountStatus"] == "Unused"]
    assert len(used) + len(unused) + 1 == len(mine)
    # 4 GPUs from Oct 10 00:00 to Nov 1: 22 days x 24 h = 528 h, at 2.60 per GPU-hour.
    assert purchase["BilledCost"] == D("5491.20")
    assert purchase["CommitmentDiscountQuantity"] == 4 * 528
    # 1.4: CommitmentDiscountId = ResourceId on the purchase and the unused portion.
    assert {r["ResourceId"] for r in [purchase, *unused]} == {rid}
    assert {r["CapacityReservationId"] for r in mine} == {rid}
    assert {r["CapacityReservationStatus"] for r in used} == {"Used"}
    assert {r["CapacityReservationStatus"] for r in unused} == {"Unused"}
    assert sum(r["ConsumedQuantity"] for r in used) == 3 * 528
    assert sum(r["CommitmentDiscountQuantity"] for r in unused) == 528
    assert sum(r["EffectiveCost"] for r in used) == D("4118.40")  # 1584 x 2.60
    assert sum(r["EffectiveCost"] for r in unused) == D("1372.80")  # 528 x 2.60
    assert all(r["BilledCost"] == 0 for r in [*used, *unused])
    # Covered GPU-hours carry the on-demand list price of the 70B model's premium usage: the
    # graduated band acme's month reaches (3.50), per unit of 1.25 units per GPU-hour; the
    # contracted price is that less the plan's 5%, so the saving shows.
    assert {(r["SkuPriceId"], r["ListUnitPrice"], r["ContractedUnitPrice"], r["PricingUnit"])
            for r in used} == {("premium/graduated/band-2", D("3.50"), D("3.325"), "Units")}
    assert sum(r["PricingQuantity"] for r in used) == 3 * 528 * D("1.25")
    saving = sum(r["ContractedCost"] - r["EffectiveCost"] for r in used)
    assert saving == 3 * 528 * D("1.25") * D("3.325") - D("4118.40") > 0
    assert all(json.loads(r["CommitmentProgramEligibilityDetails"]) == {
        "CommitmentPrograms": [{"ProgramType": "Reserved GPU"}]} for r in used)
    # Before Oct 10 all 3 GPUs are on demand: 9 days x 24 h x 3; after, none.
    on_demand = [r for r in rows(october) if r["SubAccountId"] == "acme"
                 and r["SkuId"] == "premium" and r["PricingCategory"] == "Standard"
                 and r["ChargeCategory"] == "Usage"]
    assert sum(r["ConsumedQuantity"] for r in on_demand) == 9 * 24 * 3
    assert max(r["ChargePeriodStart"] for r in on_demand) < RESERVED_FROM
    assert {r["CommitmentProgramEligibilityDetails"] for r in on_demand} == {
        json.dumps({"CommitmentPrograms": [{"ProgramType": "Reserved GPU"}]})}


def test_discount_credit_and_tax_rows(october) -> None:
    acme = [r for r in rows(october) if r["SubAccountId"] == "acme"]
    usage = [r for r in acme if r["PricingCategory"] == "Standard"
             and r["ChargeCategory"] == "Usage"]
    # growth: 5% off the on-demand price; billed = contracted cost, up to cent allocation.
    for row in usage:
        assert row["ContractedUnitPrice"] == row["ListUnitPrice"] * D("0.95")
        assert row["PricingUnit"] == "Units"
    assert abs(sum(r["BilledCost"] for r in usage)
               - sum(r["ContractedCost"] for r in usage)) < D("0.01") * len(usage)
    assert [(r["SubAccountId"], r["BilledCost"]) for r in rows(october)
            if r["ChargeCategory"] == "Credit"] == [("acme", D("-1000.00"))]
    (tax,) = [r for r in acme if r["ChargeCategory"] == "Tax"]
    assert tax["BilledCost"] == (sum(r["BilledCost"] for r in acme) - tax["BilledCost"]) \
        * D("0.20")
    assert tax["SkuId"] is None
    assert tax["PricingQuantity"] is None


def test_plan_minimum_is_a_contract_commitment_the_charges_apply_to(october) -> None:
    applied: dict[str, D] = defaultdict(D)
    for row in rows(october):
        if row["ContractApplied"]:
            for element in json.loads(row["ContractApplied"], parse_float=D)["Elements"]:
                applied[element["ContractCommitmentId"]] += element.get(
                    "ContractCommitmentAppliedCost", D(0))
    minimum = "zen/plan/enterprise/minimum/2026-10"
    # zen's usage after discount is far below 25,000.00: the true-up brings it there.
    assert applied[minimum] == D("25000.00")
    (true_up,) = [r for r in rows(october) if r["x_InvoiceLineKind"] == "true_up"]
    assert json.loads(true_up["ContractApplied"], parse_float=D)["Elements"] == [{
        "ContractId": "zen/contract", "ContractCommitmentId": minimum,
        "ContractCommitmentAppliedCost": true_up["BilledCost"]}]
    commitments = {r["ContractCommitmentId"]: r for r in rows(october, "ContractCommitment")}
    assert commitments[minimum]["ContractCommitmentCost"] == D("25000.00")
    assert commitments[minimum]["ContractCommitmentCategory"] == "Spend"
    assert commitments[minimum]["ContractCommitmentModel"] == "Discontinuous"
    assert commitments[minimum]["ContractCommitmentDiscountPercentage"] == D("0.12")
    reservation = f"acme/reservations/premium/{RESERVED_FROM:%Y-%m-%dT%H:%M:%SZ}"
    assert commitments[reservation]["ContractCommitmentQuantity"] == 4 * 528
    assert commitments[reservation]["ContractCommitmentCost"] == D("5491.20")
    assert commitments[reservation]["ContractCommitmentType"] == "Capacity Reservation"
    # acme's growth plan has no minimum: nothing of acme's applies to one.
    assert not [k for k in applied if k.startswith("acme/plan")]


def test_showback_statement_has_no_invoice_and_no_invoice_detail(october) -> None:
    lumen = [r for r in rows(october) if r["SubAccountId"] == "lumen"]
    assert lumen
    assert {(r["InvoiceId"], r["InvoiceDetailId"], r["x_DocumentType"]) for r in lumen} == {
        (None, None, "statement")}
    assert not [r for r in rows(october, "InvoiceDetail") if r["x_SubAccountId"] == "lumen"]


def test_late_usage_is_a_correction_in_the_next_billing_period(billed, october,
                                                               november) -> None:
    con, _, _, _, _ = billed
    assert not any(r["ChargeClass"] for r in rows(october))
    corrections = rows(november)
    assert corrections
    assert all(r["ChargeClass"] == "Correction" for r in corrections)
    (note, total), = con.execute(
        "SELECT number, total FROM invoices WHERE kind = 'adjustment'").fetchall()
    assert note == "DN-2026-0001"  # late usage raises the bill: a debit note
    assert {r["InvoiceId"] for r in corrections} == {note}
    assert sum(r["BilledCost"] for r in corrections) == total
    nov_start, nov_end = month_bounds("2026-11")
    oct_start, oct_end = month_bounds("2026-10")
    for row in corrections:
        assert row["SubAccountId"] == "zen"
        assert row["x_Adjusts"] == "INV-2026-10-0002"
        assert row["x_DocumentType"] == "debit_note"
        assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (nov_start, nov_end)
        assert (row["ChargePeriodStart"], row["ChargePeriodEnd"]) == (oct_start, oct_end)
    detail = rows(november, "InvoiceDetail")
    assert {(r["InvoiceId"], r["ReferenceInvoiceId"], r["InvoiceIssueStatus"])
            for r in detail} == {(note, "INV-2026-10-0002", "Issued")}
    assert sum(r["BilledCost"] for r in detail) == total
    periods = {r["BillingPeriodStart"]: r["BillingPeriodStatus"]
               for r in rows(november, "BillingPeriod")}
    assert periods == {oct_start: "Closed", nov_start: "Open"}


def test_written_files_round_trip_and_name_the_version(billed, october) -> None:
    con, tenants, cards, _, tmp = billed
    folder = tmp / "exports" / "2026-10"
    paths = write_focus_export(con, "2026-10", folder, tenants=tenants, cards=cards,
                               created=EXPORTED)
    stems = {"CostAndUsage": "focus", "InvoiceDetail": "focus-invoice-detail",
             "BillingPeriod": "focus-billing-period",
             "ContractCommitment": "focus-contract-commitment"}
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}{ext}" for stem in stems.values()
        for ext in (".parquet", ".csv", ".metadata.json"))
    assert not list(folder.glob(".*")), "temporary files left behind"
    for dataset, stem in stems.items():
        table = october[dataset]
        parquet = pq.read_table(folder / f"{stem}.parquet")
        assert parquet.schema.metadata[b"focus_version"].decode() == FOCUS_VERSION == "1.4"
        meta = json.loads((folder / f"{stem}.metadata.json").read_text())
        assert (meta["FocusVersion"], meta["DatasetInstance"]) == ("1.4", dataset)
        assert meta["Rows"] == table.num_rows
        assert [c["ColumnName"] for c in meta["Schema"]["ColumnDefinition"]] == \
            table.column_names
        assert parquet.equals(table)
        with (folder / f"{stem}.csv").open(newline="") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == table.column_names
            text_rows = list(reader)
        assert len(text_rows) == table.num_rows
        for text, row in zip(text_rows, parquet.to_pylist(), strict=True):
            for name, value in row.items():
                cell = text[name]
                if value is None:
                    assert cell == "", name
                elif isinstance(value, datetime):
                    assert cell.endswith("Z"), cell
                    assert len(cell) == len("2026-10-01T00:00:00Z"), cell
                    assert datetime.fromisoformat(cell) == value
                elif isinstance(value, Decimal):
                    assert Decimal(cell) == value, name
                else:
                    assert cell == str(value), name


# --- the validator catches what it is meant to catch -------------------------------------

Rows = list[dict[str, Any]]


def _edit(datasets: dict[str, pa.Table], name: str, change: Callable[[Rows], Rows | None],
          schema: pa.Schema | None = None) -> dict[str, pa.Table]:
    table = datasets[name]
    edited = table.to_pylist()
    result = change(edited)
    edited = edited if result is None else result
    return {**datasets, name: pa.Table.from_pylist(edited, schema=schema or table.schema)}


def _first(match: Callable[[dict[str, Any]], bool], **changes: Any) -> Callable[[Rows], None]:
    def change(rows: Rows) -> None:
        row = next(r for r in rows if match(r))
        row.update(changes)
    return change


def _is_purchase(r: dict[str, Any]) -> bool:
    return r["ChargeCategory"] == "Purchase" and r["CommitmentDiscountId"] is not None


def _is_used(r: dict[str, Any]) -> bool:
    return r["CommitmentDiscountStatus"] == "Used"


def _is_unused(r: dict[str, Any]) -> bool:
    return r["CommitmentDiscountStatus"] == "Unused"


def _on_demand(r: dict[str, Any]) -> bool:
    return r["PricingCategory"] == "Standard" and r["ChargeCategory"] == "Usage"


def _drop(name: str, column: str) -> Callable[[dict[str, pa.Table]], dict[str, pa.Table]]:
    return lambda d: {**d, name: d[name].drop_columns([column])}


def _old_covered_pricing(rows: Rows) -> None:
    """The first version's covered rows: the reservation's SKU price as list price."""
    for row in rows:
        if _is_used(row):
            row.update(SkuPriceId="premium/reserved", ListUnitPrice=D("2.60"),
                       ContractedUnitPrice=D("2.60"), PricingUnit="GPU-Hours",
                       PricingQuantity=row["ConsumedQuantity"],
                       ListCost=D("2.60") * row["ConsumedQuantity"],
                       ContractedCost=D("2.60") * row["ConsumedQuantity"])


def _naive(d: dict[str, pa.Table]) -> dict[str, pa.Table]:
    table = d["BillingPeriod"]
    index = table.schema.get_field_index("BillingPeriodCreated")
    schema = table.schema.set(index, pa.field("BillingPeriodCreated", pa.timestamp("us")))
    return {**d, "BillingPeriod": table.cast(schema)}


CU = "CostAndUsage"
INVALID: dict[str, tuple[str, Callable[[dict[str, pa.Table]], dict[str, pa.Table]]]] = {
    "Mandatory column missing": ("presence", _drop(CU, "BilledCost")),
    "Conditional column missing": ("presence", _drop(CU, "CommitmentProgramEligibilityDetails")),
    "capacity reservation columns missing": ("presence", _drop(CU, "CapacityReservationId")),
    "custom column without x_": ("naming", lambda d: {**d, CU: d[CU].rename_columns(
        [n.replace("x_Model", "Model") if n == "x_Model" else n
         for n in d[CU].column_names])}),
    "lower-case currency": ("currency code format", lambda d: _edit(
        d, CU, _first(lambda r: True, BillingCurrency="usd"))),
    "the old pricing unit": ("unit format", lambda d: _edit(
        d, CU, _first(_on_demand, PricingUnit="Normalized GPU-Hours"))),
    "a charge category FOCUS does not have": ("allowed values", lambda d: _edit(
        d, CU, _first(lambda r: True, ChargeCategory="Refund"))),
    "a usage-based purchase": ("ChargeFrequency", lambda d: _edit(
        d, CU, _first(_is_purchase, ChargeFrequency="Usage-Based"))),
    "a reservation purchase without its resource": ("CommitmentDiscountId = ResourceId",
                                                    lambda d: _edit(d, CU, _first(
                                                        _is_purchase, ResourceId=None))),
    "unused reservation hours without their resource": (
        "CommitmentDiscountId = ResourceId", lambda d: _edit(
            d, CU, _first(_is_unused, ResourceId=None, ResourceName=None, ResourceType=None))),
    "covered usage at the reservation's price": (
        "unit prices exclude commitment discounts", lambda d: _edit(d, CU, _old_covered_pricing)),
    "covered usage without its eligibility": ("CommitmentProgramEligibilityDetails",
                                              lambda d: _edit(d, CU, _first(
                                                  _is_used,
                                                  CommitmentProgramEligibilityDetails=None))),
    "eligibility with no program": ("CommitmentProgramEligibilityDetails", lambda d: _edit(
        d, CU, _first(_on_demand,
                      CommitmentProgramEligibilityDetails='{"CommitmentPrograms": []}'))),
    "eligibility that is not JSON": ("JSON object format", lambda d: _edit(
        d, CU, _first(_on_demand, CommitmentProgramEligibilityDetails="Reserved GPU"))),
    "a contract element applying nothing": ("ContractApplied", lambda d: _edit(
        d, CU, _first(lambda r: r["ContractApplied"] is not None, ContractApplied=json.dumps(
            {"Elements": [{"ContractId": "zen/contract",
                           "ContractCommitmentId": "zen/plan/enterprise/minimum/2026-10"}]})))),
    "a contract commitment nobody describes": ("Contract Commitment join", lambda d: _edit(
        d, CU, _first(lambda r: r["ContractApplied"] is not None, ContractApplied=json.dumps(
            {"Elements": [{"ContractId": "zen/contract", "ContractCommitmentId": "nowhere",
                           "ContractCommitmentAppliedCost": 1}]})))),
    "list cost that is not price x quantity": ("ListCost", lambda d: _edit(
        d, CU, _first(_on_demand, ListCost=D("1")))),
    "consumption on a purchase": ("ConsumedQuantity", lambda d: _edit(
        d, CU, _first(_is_purchase, ConsumedQuantity=D(1), ConsumedUnit="GPU-Hours"))),
    "capacity status without a reservation": ("CapacityReservationStatus", lambda d: _edit(
        d, CU, _first(_on_demand, CapacityReservationStatus="Used"))),
    "a SKU on tax": ("tax charges", lambda d: _edit(
        d, CU, _first(lambda r: r["ChargeCategory"] == "Tax", SkuId="premium"))),
    "unused hours amortizing too much": ("EffectiveCost", lambda d: _edit(
        d, CU, _first(_is_unused, EffectiveCost=D("1000000")))),
    "a charge period that ends before it starts": ("ChargePeriod", lambda d: _edit(
        d, CU, _first(_on_demand, ChargePeriodEnd=datetime(2026, 9, 1, tzinfo=UTC)))),
    "an empty string for null": ("null handling", lambda d: _edit(
        d, CU, _first(_on_demand, CommitmentDiscountId=""))),
    "invoice detail that does not add up": ("invoice reconciliation", lambda d: _edit(
        d, "InvoiceDetail", _first(lambda r: True, BilledCost=D("0.01")))),
    "an invoice line twice": ("InvoiceDetailId", lambda d: _edit(
        d, "InvoiceDetail", lambda rows: [*rows, rows[0]])),
    "an invoice status FOCUS does not have": ("allowed values", lambda d: _edit(
        d, "InvoiceDetail", _first(lambda r: True, InvoiceIssueStatus="Paid"))),
    "no payment terms": ("nulls", lambda d: _edit(
        d, "InvoiceDetail", _first(lambda r: True, PaymentTerms=None))),
    "a cost row pointing at no invoice line": ("Invoice Detail join", lambda d: _edit(
        d, "InvoiceDetail", lambda rows: rows[1:])),
    "a billing period status FOCUS does not have": ("allowed values", lambda d: _edit(
        d, "BillingPeriod", _first(lambda r: True, BillingPeriodStatus="Final"))),
    "a billing period missing": ("Billing Period join", lambda d: _edit(
        d, "BillingPeriod", lambda rows: [])),
    "a naive date/time": ("type", _naive),
    "a duration in words": ("ContractCommitmentDurationType", lambda d: _edit(
        d, "ContractCommitment", _first(lambda r: True,
                                        ContractCommitmentDurationType="monthly"))),
    "a continuous commitment over its whole term": (
        "ContractCommitmentFulfillmentInterval", lambda d: _edit(
            d, "ContractCommitment", _first(
                lambda r: r["ContractCommitmentModel"] == "Continuous",
                ContractCommitmentFulfillmentInterval="Full Commitment Period"))),
    "a scoped commitment without its scope": ("Applicability", lambda d: _edit(
        d, "ContractCommitment", _first(lambda r: True,
                                        ContractCommitmentApplicability="{}"))),
    "a commitment of neither cost nor quantity": ("ContractCommitmentCost", lambda d: _edit(
        d, "ContractCommitment", _first(
            lambda r: r["ContractCommitmentCategory"] == "Spend", ContractCommitmentCost=None))),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_the_validator_catches_an_invalid_sample(case, october) -> None:
    rule, spoil = INVALID[case]
    assert validate(october, OPERATING_MODEL) == []
    found = validate(spoil(october), OPERATING_MODEL)
    assert any(f"[{rule}]" in problem for problem in found), (case, found)
