"""Rate cards and tenants as YAML: every problem reported at once, with file and key."""

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from models.billing.rate_cards import (
    Basis,
    ConfigError,
    PricingMode,
    UnknownProduct,
    load_rate_cards,
    load_tenants,
    month_bounds,
    rate_card_for,
)
from models.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
CARDS = ROOT / "tests" / "fixtures" / "rate-cards"
EXAMPLE = ROOT / "examples" / "design-example"
D0 = Decimal(0)


def problems_of(path: Path, tenants: Path | None = None) -> list[str]:
    if tenants is None:
        with pytest.raises(ConfigError) as caught:
            load_rate_cards(path)
    else:
        cards = load_rate_cards(path)
        with pytest.raises(ConfigError) as caught:
            load_tenants(tenants, cards)
    return caught.value.problems


def keyed(problems: list[str], path: Path) -> dict[str, str]:
    """{key: message} from `file: key: message`; every problem must name the file."""
    out = {}
    for problem in problems:
        assert problem.startswith(f"{path}: "), problem
        key, _, message = problem.removeprefix(f"{path}: ").partition(": ")
        out[key] = message
    return out


def test_good_card_loads_every_version_with_exact_decimals() -> None:
    september, october = load_rate_cards(CARDS / "good.yaml")
    assert (september.version, september.effective_to) == ("2026-09", date(2026, 10, 1))
    assert october.effective_to is None
    assert october.currency == "EUR"
    assert october.minor_unit == 2
    premium = october.tier("premium")
    assert premium.mode is PricingMode.GRADUATED
    # `1_000` (YAML integer with separator) and "10000" (string) are both exact.
    assert [b.up_to for b in premium.bands] == [Decimal(1000), Decimal(10000), None]
    assert [b.price for b in premium.bands] == [Decimal("4.00"), Decimal("3.50"),
                                                 Decimal("3.00")]
    assert premium.bands[1].flat_fee == Decimal("100.00")
    assert premium.reserved_price == Decimal("2.60")
    assert october.tier("economy").bands[0].price == Decimal("0.60")
    growth = october.plans["growth"]
    assert (growth.base_fee, growth.discount_pct, growth.minimum) == (
        Decimal("500.00"), Decimal(5), Decimal(1000))
    assert growth.usage_range_gpu_hours == (Decimal(500), None)
    # Plan fields left out are zero, never a guessed price.
    basic = october.plans["basic"]
    assert (basic.base_fee, basic.discount_pct, basic.minimum) == (D0, D0, D0)


def test_rate_card_for_picks_the_version_in_effect() -> None:
    cards = load_rate_cards(CARDS / "good.yaml")
    assert rate_card_for(cards, date(2026, 9, 1)).version == "2026-09"
    assert rate_card_for(cards, date(2026, 9, 30)).version == "2026-09"
    assert rate_card_for(cards, date(2026, 10, 1)).version == "2026-10"
    assert rate_card_for(cards, date(2031, 1, 1)).version == "2026-10"
    with pytest.raises(ConfigError, match="no rate card is in effect on 2026-08-01"):
        rate_card_for(cards, date(2026, 8, 1))


def test_tier_map_goes_through_product_normalization() -> None:
    card = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
    assert card.tier_of("NVIDIA H100 80GB HBM3") == "premium"
    assert card.tier_of("NVIDIA-H100-80GB-HBM3") == "premium"
    assert card.tier_of("NVIDIA-H200-MIG-1g.18gb") == "premium"
    assert card.tier_of("NVIDIA-A100-SXM4-40GB") == "standard"
    assert card.tier_of("NVIDIA A100-SXM4-80GB") == "standard"
    assert card.tier_of("Tesla-T4") == "economy"
    assert card.tier_of("NVIDIA L4") == "economy"


def test_unknown_gpu_product_is_an_error_naming_it_not_a_default_tier() -> None:
    card = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
    with pytest.raises(UnknownProduct) as caught:
        card.tier_of("NVIDIA B200")
    message = str(caught.value)
    assert "'NVIDIA B200'" in message
    assert "'B200'" in message
    assert "products" in message
    assert str(EXAMPLE / "rate-card.yaml") in message


@pytest.mark.parametrize(
    ("params_b", "size_class"),
    [
        # DESIGN.md: small < 10B <= medium < 40B <= large < 100B <= xlarge.
        (7.0, "small"), (9.999, "small"), (10.0, "medium"), (13, "medium"),
        (39.9, "medium"), (40, "large"), (70.0, "large"), (100, "xlarge"), (405.0, "xlarge"),
        (None, "unknown"),
    ],
)
def test_size_class_boundaries(params_b: float | None, size_class: str) -> None:
    card = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
    assert card.size_class_of(params_b) == size_class


def test_size_multipliers_of_the_design_example() -> None:
    card = load_rate_cards(EXAMPLE / "rate-card.yaml")[0]
    assert [card.multiplier(s) for s in ("small", "medium", "large", "xlarge", "unknown")] == [
        Decimal("1.00"), Decimal("1.10"), Decimal("1.25"), Decimal("1.50"), Decimal("1.00")]


def test_bad_prices_are_all_reported() -> None:
    path = CARDS / "bad-prices.yaml"
    problems = keyed(problems_of(path), path)
    assert set(problems) == {
        "tiers.premium.bands[0].price", "tiers.premium.bands[1].price",
        "tiers.premium.bands[2].price", "tiers.premium.reserved_price", "tiers.economy.price",
        "plans.growth.discount_pct",
    }
    # A YAML float would carry binary error into money: it must be written as text.
    assert "string" in problems["tiers.premium.bands[0].price"]
    assert "4.1" in problems["tiers.premium.bands[0].price"]
    assert "2.6" in problems["tiers.premium.reserved_price"]
    assert "at least 0" in problems["tiers.premium.bands[1].price"]
    assert "'three'" in problems["tiers.premium.bands[2].price"]
    assert "at most 100" in problems["plans.growth.discount_pct"]


def test_bad_bands_and_modes_are_all_reported() -> None:
    path = CARDS / "bad-bands.yaml"
    problems = keyed(problems_of(path), path)
    assert "above the previous band's 5000" in problems["tiers.overlapping.bands[1].up_to"]
    assert "only the last band is open-ended" in problems[
        "tiers.open_in_the_middle.bands[0].up_to"]
    assert "leave out up_to" in problems["tiers.open_in_the_middle.bands[1].up_to"]
    assert "missing" in problems["tiers.no_mode.mode"]
    assert "not bands" in problems["tiers.flat_with_bands.bands"]
    assert "'tiered'" in problems["tiers.unknown_mode.mode"]
    # One tier's mistakes do not hide another's: every tier of the file is named.
    tiers = {key.split(".")[1] for key in problems}
    assert tiers == {"overlapping", "open_in_the_middle", "no_mode", "flat_with_bands",
                     "unknown_mode"}


def test_unknown_and_misplaced_keys_are_all_reported() -> None:
    path = CARDS / "bad-keys.yaml"
    problems = keyed(problems_of(path), path)
    assert set(problems) == {
        "discount", "currency", "tiers.premium.reserve_price",
        "size_classes[1].below_params_b", "plans.growth.discount_percent",
    }
    assert all("unknown key" in problems[k] for k in
               ("discount", "tiers.premium.reserve_price", "plans.growth.discount_percent"))
    assert "'usd'" in problems["currency"]
    assert "open-ended" in problems["size_classes[1].below_params_b"]


def test_overlapping_versions_are_an_error() -> None:
    path = CARDS / "overlapping-versions.yaml"
    problems = keyed(problems_of(path), path)
    assert problems == {"version 2026-10": "effective range overlaps version 2026-h2"}


def test_bad_tenants_are_all_reported_against_the_rate_card() -> None:
    path = CARDS / "bad-tenants.yaml"
    problems = keyed(problems_of(CARDS / "good.yaml", tenants=path), path)
    assert set(problems) == {
        "tenants.acme.plan", "tenants.acme.reservations[0].tier", "tenants.zen.basis",
        "tenants.zen.end", "tenants.zen.namespaces", "tenants.zen.credits[0].amount",
        "tenants.__idle__", "tenants.nostart.colour", "tenants.nostart.start",
    }
    assert "'platinum'" in problems["tenants.acme.plan"]
    assert "basic, growth" in problems["tenants.acme.plan"]
    assert "'ultra'" in problems["tenants.acme.reservations[0].tier"]
    assert "already belongs to acme" in problems["tenants.zen.namespaces"]
    assert "reserved" in problems["tenants.__idle__"]


def test_good_tenants_load_with_utc_times_and_defaults() -> None:
    cards = load_rate_cards(CARDS / "good.yaml")
    tenants = load_tenants(CARDS / "good-tenants.yaml", cards)
    acme, zen = tenants["acme"], tenants["zen"]
    assert acme.start == datetime(2026, 10, 16, tzinfo=UTC)
    assert acme.basis is Basis.ALLOCATION  # DESIGN.md's default basis
    assert acme.namespaces == ("team-acme", "acme-batch")
    (reservation,) = acme.reservations
    assert (reservation.tier, reservation.gpus) == ("premium", Decimal(2))
    assert reservation.end == datetime(2026, 11, 1, tzinfo=UTC)
    assert acme.credit_granted_before(datetime(2026, 10, 1, tzinfo=UTC)) == Decimal("250.00")
    assert acme.credit_granted_before(datetime(2026, 9, 1, tzinfo=UTC)) == 0
    assert zen.basis is Basis.USAGE
    assert zen.end == datetime(2026, 12, 31, tzinfo=UTC)


def test_missing_and_unparsable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_rate_cards(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tiers: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{broken}: line 2, column 1: expected ','"):
        load_rate_cards(broken)


def test_month_bounds_are_utc_calendar_months() -> None:
    assert month_bounds("2026-10") == (datetime(2026, 10, 1, tzinfo=UTC),
                                       datetime(2026, 11, 1, tzinfo=UTC))
    assert month_bounds("2026-12")[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert month_bounds("2028-02")[1] == datetime(2028, 3, 1, tzinfo=UTC)
    for bad in ("2026-13", "2026-1", "26-10", "2026-10-01", "", "2026-00"):
        with pytest.raises(UserError, match="YYYY-MM"):
            month_bounds(bad)
    # Years whose month arithmetic would overflow, or that no contract covers, are refused.
    for far in ("9999-12", "0001-01", "1969-12", "2200-01"):
        with pytest.raises(UserError, match="must be a month from 1970-01 to 2199-12"):
            month_bounds(far)
