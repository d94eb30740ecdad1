"""The FOCUS export validated column by column against the FOCUS 1.4 rules in
tests/fixtures/focus/columns.json, and tied to the invoices to the cent."""

import csv
import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.billing import lifecycle
from models.billing.focus import FOCUS_VERSION, focus_table, write_focus_export
from models.billing.pricing import price_invoice
from models.billing.rate_cards import (
    CreditGrant,
    Reservation,
    load_rate_cards,
    load_tenants,
    month_bounds,
)
from models.ledger import warehouse
from models.ledger.usage import ledger_table, make_sample_id

EXAMPLE = Path(__file__).parents[3] / "examples" / "design-example"
RULES = json.loads((Path(__file__).parents[2] / "fixtures" / "focus" / "columns.json").read_text())
SPEC = {c["name"]: c for c in RULES["columns"]}
ARROW = {"Decimal": pa.types.is_decimal, "String": pa.types.is_string,
         "JSON": pa.types.is_string, "Date/Time": pa.types.is_timestamp}
OCT_CLOSE = datetime(2026, 11, 1, 6, tzinfo=UTC)
LATE_NOTE = datetime(2026, 11, 5, tzinfo=UTC)
RESERVED_FROM = datetime(2026, 10, 10, tzinfo=UTC)


def _bill(con, card, tenants, period, now):
    start, end = month_bounds(period)
    invoices = [price_invoice(t, card, period, warehouse.tenant_usage_hours(con, t, start, end))
                for _, t in sorted(tenants.items())]
    lifecycle.write_drafts(con, period, invoices, "inputs", now)
    return {i.tenant: i for i in invoices}


def _load(con, card, files):
    warehouse.load_rows(con, card, files)


@pytest.fixture(scope="module")
def billed(tmp_path_factory):
    """October 2026 of DESIGN.md's example, closed; acme reserves 4 premium GPUs from Oct 10
    (one stays unused every hour) and has 1,000.00 of prepaid credit; 10 late GPU-hours of
    zen arrive after close and yield an adjustment note in November."""
    tmp = tmp_path_factory.mktemp("focus")
    cards = load_rate_cards(EXAMPLE / "rate-card.yaml")
    card = cards[0]
    tenants = load_tenants(EXAMPLE / "tenants.yaml", cards)
    tenants["acme"] = replace(
        tenants["acme"],
        reservations=(Reservation("premium", Decimal(4), RESERVED_FROM, None),),
        credits=(CreditGrant(Decimal("1000.00"), datetime(2026, 9, 1, tzinfo=UTC)),))
    con = warehouse.connect(tmp / "warehouse.duckdb")
    warehouse.create_schema(con)
    _load(con, card, [EXAMPLE / "usage.parquet"])
    drafts = _bill(con, card, tenants, "2026-10", OCT_CLOSE)
    lifecycle.close_period(con, "2026-10", OCT_CLOSE)
    late = []
    for hour in range(10):
        start = datetime(2026, 10, 31, 10, tzinfo=UTC) + timedelta(hours=hour)
        late.append({
            "sample_id": make_sample_id("late", start.isoformat()), "window_start": start,
            "duration_s": 3600.0, "cluster": "example", "node": "zen-late",
            "gpu_uuid": "MIG-zen-late-0", "gpu_product": "NVIDIA H100 80GB HBM3",
            "mig_profile": "7g.80gb", "gpu_equivalents": 1.0, "tenant": "zen",
            "namespace": "team-zen", "pod": "late-0", "pod_uid": "uid-late",
            "workload_kind": "batch", "model": "mistral-7b", "model_params_b": 7.0,
            "allocated_gpu_seconds": 3600.0, "used_gpu_seconds": 1800.0,
            "memory_used_bytes": None, "source": "test"})
    late_file = tmp / "late.parquet"
    pq.write_table(ledger_table(late), late_file)
    _load(con, card, [EXAMPLE / "usage.parquet", late_file])
    _bill(con, card, tenants, "2026-10", LATE_NOTE)
    yield con, tenants, drafts, tmp
    con.close()


@pytest.fixture(scope="module")
def october(billed):
    con, tenants, _, _ = billed
    return focus_table(con, "2026-10", tenants=tenants)


@pytest.fixture(scope="module")
def november(billed):
    con, tenants, _, _ = billed
    return focus_table(con, "2026-11", tenants=tenants)


def _rows(table):
    return table.to_pylist()


@pytest.mark.parametrize("period", ["october", "november"])
def test_columns_follow_the_specification(period, request):
    table = request.getfixturevalue(period)
    names = table.column_names
    for spec in RULES["columns"]:
        if spec["feature_level"] == "Mandatory":
            assert spec["name"] in names, f"Mandatory column {spec['name']} missing"
    # Conditions that hold for this platform: reservations are commitment discounts, GPUs
    # are provisioned resources of two types, tenants are sub accounts, usage is measured,
    # the rate card is a published price list with SKU prices, plans negotiate discounts,
    # on-demand and committed prices differ, invoices are issued.
    for condition in ("includes commitment discounts", "includes provisioned resources",
                      "includes provisioned resources and resource type assignment",
                      "includes sub accounts", "includes usage measurement",
                      "includes unit pricing", "includes list unit prices",
                      "includes negotiated pricing", "includes multiple pricing categories",
                      "includes payable invoices"):
        for spec in RULES["columns"]:
            if spec["condition"] == condition:
                assert spec["name"] in names, f"{spec['name']} required when {condition}"
    first_custom = next(i for i, n in enumerate(names) if n not in SPEC)
    for i, name in enumerate(names):
        field = table.schema.field(name)
        if name in SPEC:
            assert i < first_custom, f"FOCUS column {name} after custom columns"
            assert ARROW[SPEC[name]["data_type"]](field.type), f"{name}: {field.type}"
            if SPEC[name]["data_type"] == "Date/Time":
                assert field.type.tz == "UTC"
        else:
            assert name.startswith(RULES["custom_column_prefix"]), f"custom column {name}"


@pytest.mark.parametrize("period", ["october", "november"])
def test_every_row_obeys_the_column_rules(period, request):
    table = request.getfixturevalue(period)
    rows = _rows(table)
    assert rows
    subcategories = RULES["service_subcategories"]
    for n, row in enumerate(rows):
        where = f"row {n} ({row['ChargeDescription']})"
        for name, spec in SPEC.items():
            if name not in row:
                continue
            value = row[name]
            if not spec["allows_nulls"]:
                assert value is not None, f"{where}: {name} is null"
            if value is not None and "allowed_values" in spec:
                assert value in spec["allowed_values"], f"{where}: {name}={value!r}"
            if value is not None and spec["data_type"] == "JSON":
                assert isinstance(json.loads(value), dict)
        assert row["ServiceSubcategory"] in subcategories[row["ServiceCategory"]]
        assert row["BillingCurrency"] == "USD"
        correction = row["ChargeClass"] == "Correction"
        category = row["ChargeCategory"]
        # ChargeFrequency: never Usage-Based for a Purchase.
        assert not (category == "Purchase" and row["ChargeFrequency"] == "Usage-Based"), where
        # SkuPriceId: not null for Usage or Purchase unless a correction; pricing columns
        # (quantity, unit prices, category, consumed quantity) null when SkuPriceId is null.
        if category in {"Usage", "Purchase"} and not correction:
            for name in ("SkuId", "SkuPriceId", "PricingQuantity", "PricingUnit",
                         "ListUnitPrice", "ContractedUnitPrice", "PricingCategory"):
                assert row[name] is not None, f"{where}: {name}"
        if row["SkuPriceId"] is None:
            for name in ("PricingQuantity", "ListUnitPrice", "ContractedUnitPrice",
                         "PricingCategory", "ConsumedQuantity", "CommitmentDiscountQuantity"):
                assert row[name] is None, f"{where}: {name} without SkuPriceId"
        # ConsumedQuantity: only on Usage rows, not on unused commitment, present otherwise.
        unused = row["CommitmentDiscountStatus"] == "Unused"
        if category != "Usage" or unused:
            assert row["ConsumedQuantity"] is None, where
        elif not correction:
            assert row["ConsumedQuantity"] is not None, where
            assert row["ConsumedUnit"], where
        assert (row["ConsumedQuantity"] is None) == (row["ConsumedUnit"] is None), where
        # Cost = unit price x pricing quantity where both are given.
        for cost, price in (("ListCost", "ListUnitPrice"), ("ContractedCost",
                                                            "ContractedUnitPrice")):
            if row[price] is not None and row["PricingQuantity"] is not None:
                assert row[cost] == row[price] * row["PricingQuantity"], f"{where}: {cost}"
            assert row[price] is None or row[price] >= 0
        if row["ListUnitPrice"] is None and category in {"Credit", "Adjustment"}:
            assert row["ListCost"] == row["BilledCost"], where
        if category == "Credit":
            assert row["ContractedCost"] == row["BilledCost"], where
        # ChargeClass: null unless the row corrects a closed billing period.
        assert row["ChargeClass"] in (None, "Correction")
        # Commitment discounts: the dependent columns follow CommitmentDiscountId.
        has_commitment = row["CommitmentDiscountId"] is not None
        for name in ("CommitmentDiscountCategory", "CommitmentDiscountType",
                     "CommitmentDiscountName"):
            assert (row[name] is not None) == has_commitment, f"{where}: {name}"
        if not has_commitment:
            assert row["CommitmentDiscountStatus"] is None
        elif category == "Usage":
            assert row["CommitmentDiscountStatus"] is not None, where
        if has_commitment and category in {"Usage", "Purchase"} and not correction:
            assert row["CommitmentDiscountQuantity"] is not None, where
        assert ((row["CommitmentDiscountQuantity"] is None)
                == (row["CommitmentDiscountUnit"] is None)), where
        if category == "Purchase" and has_commitment:
            assert row["PricingCategory"] != "Committed"
            assert row["EffectiveCost"] == 0
        if row["PricingCategory"] == "Committed":
            assert has_commitment, where
            assert category != "Purchase", where
        # Charge period: start before end; inside the billing period unless a correction.
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"], where
        assert row["BillingPeriodStart"] < row["BillingPeriodEnd"]
        if not correction:
            assert row["BillingPeriodStart"] <= row["ChargePeriodStart"], where
            assert row["ChargePeriodEnd"] <= row["BillingPeriodEnd"], where
        # Resources: MIG instances and whole GPUs, and no resource on non-usage rows.
        if row["ResourceId"] is not None:
            assert row["ResourceType"] in {"GPU", "MIG Instance"}
            assert row["ResourceName"]
        assert row["InvoiceId"]
        assert row["InvoiceDetailId"].startswith(row["InvoiceId"] + "#")


def test_billed_cost_equals_each_invoice_total_to_the_cent(billed, october):
    con, _, drafts, _ = billed
    totals = dict(con.execute(
        "SELECT invoice_id, total FROM invoices WHERE period = '2026-10' "
        "AND kind = 'invoice'").fetchall())
    sums = defaultdict(Decimal)
    by_tenant = defaultdict(Decimal)
    for row in _rows(october):
        sums[row["InvoiceId"]] += row["BilledCost"]
        by_tenant[row["SubAccountId"]] += row["BilledCost"]
        assert row["BilledCost"] == row["BilledCost"].quantize(Decimal("0.01"))
    assert dict(sums) == {k: Decimal(v) for k, v in totals.items()}
    assert dict(by_tenant) == {t: i.total for t, i in drafts.items()}


def test_reservation_is_a_commitment_purchase_amortized_over_used_and_unused(october):
    rows = [r for r in _rows(october) if r["CommitmentDiscountId"]]
    purchase = [r for r in rows if r["ChargeCategory"] == "Purchase"]
    used = [r for r in rows if r["CommitmentDiscountStatus"] == "Used"]
    unused = [r for r in rows if r["CommitmentDiscountStatus"] == "Unused"]
    assert len(purchase) == 1
    assert len(used) + len(unused) + 1 == len(rows)
    # 4 GPUs from Oct 10 00:00 to Nov 1: 22 days x 24 h = 528 h, at 2.60 per GPU-hour.
    assert purchase[0]["BilledCost"] == Decimal("5491.20")
    assert purchase[0]["CommitmentDiscountQuantity"] == 4 * 528
    # acme runs 3 premium GPUs every hour, so 3 of the 4 reserved GPUs are used.
    assert sum(r["ConsumedQuantity"] for r in used) == 3 * 528
    assert sum(r["CommitmentDiscountQuantity"] for r in unused) == 528
    assert sum(r["EffectiveCost"] for r in used) == Decimal("4118.40")  # 1584 x 2.60
    assert sum(r["EffectiveCost"] for r in unused) == Decimal("1372.80")  # 528 x 2.60
    assert all(r["BilledCost"] == 0 and r["ResourceId"] is None for r in unused)
    assert min(r["ChargePeriodStart"] for r in used) == RESERVED_FROM
    # Before Oct 10 all 3 GPUs are on demand: 9 days x 24 h x 3; after, none.
    on_demand = [r for r in _rows(october) if r["SubAccountId"] == "acme"
                 and r["SkuId"] == "premium" and r["PricingCategory"] == "Standard"
                 and r["ChargeCategory"] == "Usage"]
    assert sum(r["ConsumedQuantity"] for r in on_demand) == 9 * 24 * 3
    assert max(r["ChargePeriodStart"] for r in on_demand) < RESERVED_FROM


def test_discount_is_applied_to_the_usage_rows(october):
    rows = [r for r in _rows(october) if r["SubAccountId"] == "acme"
            and r["PricingCategory"] == "Standard" and r["ChargeCategory"] == "Usage"]
    # growth: 5% off the on-demand price; billed = contracted cost, up to cent allocation.
    for row in rows:
        assert row["ContractedUnitPrice"] == row["ListUnitPrice"] * Decimal("0.95")
    assert abs(sum(r["BilledCost"] for r in rows)
               - sum(r["ContractedCost"] for r in rows)) < Decimal("0.01") * len(rows)
    credit = [r for r in _rows(october) if r["ChargeCategory"] == "Credit"]
    assert [(r["SubAccountId"], r["BilledCost"]) for r in credit] == [
        ("acme", Decimal("-1000.00"))]


def test_late_usage_is_a_correction_in_the_next_billing_period(billed, october, november):
    con, _, _, _ = billed
    assert not any(r["ChargeClass"] for r in _rows(october))
    rows = _rows(november)
    assert rows
    assert all(r["ChargeClass"] == "Correction" for r in rows)
    (note, total), = con.execute(
        "SELECT number, total FROM invoices WHERE kind = 'adjustment'").fetchall()
    assert {r["InvoiceId"] for r in rows} == {note}
    assert sum(r["BilledCost"] for r in rows) == total
    nov_start, nov_end = month_bounds("2026-11")
    oct_start, oct_end = month_bounds("2026-10")
    for row in rows:
        assert row["SubAccountId"] == "zen"
        assert row["x_Adjusts"] == "INV-2026-10-0002"
        assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (nov_start, nov_end)
        assert (row["ChargePeriodStart"], row["ChargePeriodEnd"]) == (oct_start, oct_end)


def test_written_files_round_trip_and_name_the_version(billed, october):
    con, tenants, _, tmp = billed
    folder = tmp / "exports" / "2026-10"
    paths = write_focus_export(con, "2026-10", folder, tenants=tenants)
    assert sorted(p.name for p in paths) == ["focus.csv", "focus.metadata.json", "focus.parquet"]
    assert not list(folder.glob(".*")), "temporary files left behind"
    parquet = pq.read_table(folder / "focus.parquet")
    assert parquet.schema.metadata[b"focus_version"].decode() == FOCUS_VERSION == "1.4"
    meta = json.loads((folder / "focus.metadata.json").read_text())
    assert meta["FocusVersion"] == "1.4"
    assert meta["Rows"] == october.num_rows
    assert [c["ColumnName"] for c in meta["Schema"]["ColumnDefinition"]] == october.column_names
    assert parquet.equals(october)
    with (folder / "focus.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == october.column_names
        text_rows = list(reader)
    assert len(text_rows) == october.num_rows
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
