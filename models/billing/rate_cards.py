"""Rate cards and tenants: versioned YAML documents, validated as a whole.

Loading reports every problem at once, each with its file and key, and never falls back to a
default price: a rate card that does not say what something costs is an error."""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from models.errors import UserError
from models.files import read_yaml
from models.ledger.tiers import normalize_product


class PricingMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"
    FLAT = "flat"


class Basis(StrEnum):
    ALLOCATION = "allocation"
    USAGE = "usage"


class Meter(StrEnum):
    """What a plan bills a tenant's inference on."""

    GPU_TIME = "gpu_time"
    """GPU-hours, on every model (the default)."""
    TOKENS = "tokens"
    """Tokens, on the models the rate card has token prices for (their GPU-hours are then not
    billed again); GPU-hours on every other model."""


class Isolation(StrEnum):
    POOL = "pool"
    BRIDGE = "bridge"
    SILO = "silo"


class SlaClass(StrEnum):
    STANDARD = "standard"
    LATENCY_SENSITIVE = "latency-sensitive"
    """Gets at least its decayed P95 demand reserved, even where on-demand would be cheaper."""


# ISO 4217 minor units of the currencies we have been asked for; others must be declared
# with `minor_unit` in the rate card rather than guessed.
MINOR_UNITS = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "CNY": 2, "JPY": 0}

UNKNOWN_SIZE = "unknown"

# Bounds on every number a rate card or tenants file holds. Far beyond any real contract, and
# small enough that no product of them (units x price, GPUs x hours x price) comes near the
# 28 digits of Decimal's default context, so pricing can never overflow or round silently.
MAX_UNIT_PRICE = Decimal(1_000_000)
"""Per GPU-hour, billable unit or similar unit."""
MAX_AMOUNT = Decimal(10) ** 12
"""Fees, minimums, credits, band bounds in units, GPU-hour ranges."""
MAX_MULTIPLIER = Decimal(1000)
MAX_PARAMS_B = Decimal(1_000_000)
MAX_GPUS = Decimal(1_000_000)
MAX_DECIMALS = 12
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""Dates and billing periods lie in [EARLIEST, LATEST): date arithmetic near year 9999
overflows, and no contract of this product starts before 1970."""
MAX_NAME_LENGTH = 200


class ConfigError(UserError):
    """A rate card or tenants file is invalid; `problems` lists every one of them."""


class UnknownProduct(UserError):
    """A GPU product that no hardware tier of the rate card matches."""


@dataclass(frozen=True)
class Band:
    up_to: Decimal | None
    """Inclusive upper bound in billable units; None for the last, open band."""
    price: Decimal
    flat_fee: Decimal = Decimal(0)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class TimeOfUse:
    """Off-peak hours of a tier, in local time of `zone` (an IANA name, or UTC): on-demand
    units used in them are priced at `off_peak_multiplier` x the band price."""

    zone: str
    off_peak_hours: tuple[tuple[int, int], ...]
    """[start, end) local hours; a window may wrap midnight ([22, 6])."""
    off_peak_days: tuple[str, ...]
    """Whole local days that are off-peak (`sat`, `sun`)."""
    off_peak_multiplier: Decimal

    def off_peak(self, hour: datetime) -> bool:
        """Whether the UTC hour starting at `hour` is off-peak (its local start decides)."""
        local = hour.astimezone(ZoneInfo(self.zone))
        if DAYS[local.weekday()] in self.off_peak_days:
            return True
        return any(start <= local.hour < end if start < end else
                   (local.hour >= start or local.hour < end)
                   for start, end in self.off_peak_hours)


@dataclass(frozen=True)
class Tier:
    name: str
    products: tuple[str, ...]
    """Glob patterns over normalized product names (models.ledger.tiers.normalize_product)."""
    mode: PricingMode
    bands: tuple[Band, ...]
    reserved_price: Decimal | None
    time_of_use: TimeOfUse | None = None


@dataclass(frozen=True)
class SizeClass:
    name: str
    below_params_b: Decimal | None
    """Exclusive upper bound in billions of parameters; None for the largest class."""
    multiplier: Decimal


@dataclass(frozen=True)
class TokenPrice:
    """A model's token price: per million input and per million output tokens, or per
    package of `package_tokens` tokens (input and output together), each started package
    billed whole."""

    model: str
    input_per_million: Decimal | None = None
    output_per_million: Decimal | None = None
    package_tokens: int | None = None
    package_price: Decimal | None = None


@dataclass(frozen=True)
class Plan:
    name: str
    base_fee: Decimal
    discount_pct: Decimal
    minimum: Decimal
    usage_range_gpu_hours: tuple[Decimal, Decimal | None]
    """The monthly GPU-hours the plan is meant for: [low, high), high None for open."""
    meter: Meter = Meter.GPU_TIME


@dataclass(frozen=True)
class RateCard:
    version: str
    effective_from: date
    effective_to: date | None
    """Exclusive end; None while the card is current."""
    currency: str
    minor_unit: int
    tiers: tuple[Tier, ...]
    size_classes: tuple[SizeClass, ...]
    unknown_size_multiplier: Decimal
    plans: Mapping[str, Plan]
    source: str = ""
    token_prices: Mapping[str, TokenPrice] = field(default_factory=dict)
    """model -> its token price, for plans that meter tokens."""

    def tier_of(self, product: str) -> str:
        name = normalize_product(product)
        for tier in self.tiers:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in tier.products):
                return tier.name
        raise UnknownProduct(
            f"{self.source}: GPU product {product!r} (normalized {name!r}) matches no tier; "
            "add it to a tier's `products` in the rate card"
        )

    def size_class_of(self, params_b: float | Decimal | None) -> str:
        if params_b is None:
            return UNKNOWN_SIZE
        value = Decimal(str(params_b))
        for size in self.size_classes:
            if size.below_params_b is None or value < size.below_params_b:
                return size.name
        raise AssertionError("validated rate cards end with an open size class")

    def multiplier(self, size_class: str) -> Decimal:
        if size_class == UNKNOWN_SIZE:
            return self.unknown_size_multiplier
        return next(s.multiplier for s in self.size_classes if s.name == size_class)

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(
            f"{self.source}: rate card {self.version} has no hardware tier {name!r}; "
            f"its tiers are {', '.join(t.name for t in self.tiers)}"
        )

    def covers(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)


@dataclass(frozen=True)
class Reservation:
    tier: str
    gpus: Decimal
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class CreditGrant:
    amount: Decimal
    granted: datetime


@dataclass(frozen=True)
class Tenant:
    name: str
    plan: str
    basis: Basis
    isolation: Isolation
    sla_class: SlaClass
    start: datetime
    end: datetime | None
    namespaces: tuple[str, ...]
    reservations: tuple[Reservation, ...] = ()
    credits: tuple[CreditGrant, ...] = ()
    display_name: str = ""
    budget: Budget | None = None
    """The monthly budget, when the tenants file gives one (see `Budget` below)."""
    billing: BillingProfile | None = None
    """Who the documents are addressed to and how they are booked (`billing:` in the tenants
    file); None when the tenants file has no such block."""

    def credit_granted_before(self, moment: datetime) -> Decimal:
        return sum((c.amount for c in self.credits if c.granted < moment), Decimal(0))


@dataclass
class _Problems:
    source: str
    items: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{self.source}: {key}: {message}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _decimal(p: _Problems, key: str, value: Any, *, maximum: Decimal,
             minimum: Decimal = Decimal(0)) -> Decimal | None:
    # Floats in YAML (`price: 4.1`) would carry binary error into money; only exact text counts.
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        p.add(key, f"must be a decimal number written as a string or integer, got {_shown(value)}")
        return None
    text = str(value).replace("_", "").replace(",", "")
    if len(text) > 40:
        p.add(key, f"not a plausible number: {_shown(value)}")
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        p.add(key, f"not a decimal number: {_shown(value)}")
        return None
    if not number.is_finite():
        p.add(key, f"must be a finite number, got {_shown(value)}")
        return None
    # Out of range is reported, and the number kept so that checks depending on it (band
    # order) still run; any problem fails the whole file, so it is never priced with.
    if number < minimum:
        p.add(key, f"must be at least {minimum}, got {number}")
    elif number > maximum:
        p.add(key, f"must be at most {maximum:,}, got {number}")
    elif int(number.as_tuple().exponent) < -MAX_DECIMALS:
        p.add(key, f"at most {MAX_DECIMALS} decimal places, got {number}")
    return number


def _moment(p: _Problems, key: str, value: Any, *, required: bool = True) -> datetime | None:
    if value is None:
        if required:
            p.add(key, "missing")
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            p.add(key, f"not an ISO 8601 date or time: {value!r}")
            return None
    else:
        p.add(key, f"not a date: {value!r}")
        return None
    # A bare date or time in these files means UTC, as DESIGN.md's periods do.
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if not EARLIEST <= moment < LATEST:
        p.add(key, f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, got {value!r}")
        return None
    return moment


def _day(p: _Problems, key: str, value: Any, *, required: bool = True) -> date | None:
    moment = _moment(p, key, value, required=required)
    if moment is None:
        return None
    if moment.time() != datetime.min.time():
        p.add(key, f"must be a date (midnight UTC), got {value!r}")
    return moment.date()


def _mapping(p: _Problems, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        p.add(key, f"must be a mapping, got {type(value).__name__}")
        return {}
    return value


def _unknown_keys(p: _Problems, key: str, doc: Mapping[str, Any], allowed: Iterable[str]) -> None:
    for extra in sorted(set(doc) - set(allowed)):
        p.add(f"{key}.{extra}" if key else extra, "unknown key (a typo?)")


def _in_key(name: Any) -> str:
    """A name as it appears in a problem's key: itself when plainly printable, else quoted."""
    text = str(name)
    return text if text.strip() and text.isprintable() and len(text) <= 60 else _shown(name)


def _name(p: _Problems, key: str, name: Any) -> bool:
    """Names of tenants, plans and tiers end up in file names, invoices and exports: text
    only, printable, and of a length a person can read."""
    if not isinstance(name, str):
        p.add(key, f"a name must be text, got {type(name).__name__} {_shown(name)}; quote it")
    elif not name.strip():
        p.add(key, "a name must not be empty")
    elif not name.isprintable():
        p.add(key, f"a name must not hold control characters, got {_shown(name)}")
    elif len(name) > MAX_NAME_LENGTH:
        p.add(key, f"a name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    else:
        return True
    return False


def _enum(p: _Problems, key: str, value: Any, kind: type[StrEnum], default: StrEnum) -> Any:
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        p.add(key, f"must be one of {', '.join(k.value for k in kind)}, got {value!r}")
        return default


def _read_yaml(path: Path) -> Any:
    try:
        return read_yaml(path)
    except UserError as error:
        raise ConfigError(error.problems) from None


def load_rate_cards(path: Path) -> list[RateCard]:
    """All versions in a rate-card file (a `rate_cards:` list, or one card), validated."""
    doc = _read_yaml(path)
    p = _Problems(str(path))
    if isinstance(doc, Mapping) and "rate_cards" in doc:
        entries = doc["rate_cards"]
        if not isinstance(entries, list) or not entries:
            raise ConfigError([f"{path}: rate_cards: must be a non-empty list"])
        cards = [_rate_card(p, f"rate_cards[{i}]", e) for i, e in enumerate(entries)]
    else:
        cards = [_rate_card(p, "", doc)]
    valid = [c for c in cards if c is not None]
    ordered = sorted(valid, key=lambda c: c.effective_from)
    for a, b in itertools.pairwise(ordered):
        if a.effective_to is None or a.effective_to > b.effective_from:
            p.add(f"version {b.version}", f"effective range overlaps version {a.version}")
    if p.items:
        raise ConfigError(p.items)
    return valid


def rate_card_for(cards: Sequence[RateCard], period_start: date) -> RateCard:
    for card in cards:
        if card.covers(period_start):
            return card
    versions = ", ".join(f"{c.version} [{c.effective_from}, {c.effective_to or '...'})"
                         for c in cards)
    raise ConfigError([f"no rate card is in effect on {period_start}; versions: {versions}"])


def _rate_card(p: _Problems, at: str, raw: Any) -> RateCard | None:
    def key(name: str) -> str:
        return f"{at}.{name}" if at else name

    doc = _mapping(p, at or "(top level)", raw)
    before = len(p.items)
    _unknown_keys(p, at, doc, ["version", "effective_from", "effective_to", "currency",
                               "minor_unit", "tiers", "size_classes",
                               "unknown_size_multiplier", "plans", "token_prices"])
    version = doc.get("version")
    if not isinstance(version, str | int) or not str(version):
        p.add(key("version"), "missing (a name for this version, e.g. 2026-10)")
    effective_from = _day(p, key("effective_from"), doc.get("effective_from"))
    effective_to = _day(p, key("effective_to"), doc.get("effective_to"), required=False)
    if effective_from and effective_to and effective_to <= effective_from:
        p.add(key("effective_to"), f"must be after effective_from {effective_from}")
    currency = doc.get("currency")
    minor_unit = doc.get("minor_unit", MINOR_UNITS.get(str(currency)))
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        p.add(key("currency"), f"must be an ISO 4217 code such as USD, got {currency!r}")
    elif not isinstance(minor_unit, int) or not 0 <= minor_unit <= 4:
        p.add(key("minor_unit"), f"currency {currency}: declare its minor unit (0-4 decimals)")

    tiers: list[Tier] = []
    raw_tiers = _mapping(p, key("tiers"), doc.get("tiers"))
    if not raw_tiers:
        p.add(key("tiers"), "at least one hardware tier is needed")
    for name, raw_tier in raw_tiers.items():
        tier_key = key(f"tiers.{_in_key(name)}")
        tier = _tier(p, tier_key, str(name), raw_tier)
        if _name(p, tier_key, name) and tier:
            tiers.append(tier)

    sizes: list[SizeClass] = []
    raw_sizes = doc.get("size_classes")
    if not isinstance(raw_sizes, list) or not raw_sizes:
        p.add(key("size_classes"), "must be a non-empty list from smallest to largest")
        raw_sizes = []
    bound: Decimal | None = Decimal(0)
    for i, raw_size in enumerate(raw_sizes):
        k = key(f"size_classes[{i}]")
        size_doc = _mapping(p, k, raw_size)
        _unknown_keys(p, k, size_doc, ["name", "below_params_b", "multiplier"])
        size_name = size_doc.get("name")
        if not isinstance(size_name, str) or not size_name or size_name == UNKNOWN_SIZE:
            p.add(f"{k}.name", f"must be a name other than {UNKNOWN_SIZE!r}")
            size_name = "?"
        below = None
        last = i == len(raw_sizes) - 1
        if last and "below_params_b" in size_doc:
            p.add(f"{k}.below_params_b", "the last size class is open-ended: remove the bound")
        elif not last:
            below = _decimal(p, f"{k}.below_params_b", size_doc.get("below_params_b"),
                             maximum=MAX_PARAMS_B)
            if below is not None and bound is not None and below <= bound:
                p.add(f"{k}.below_params_b", f"must be above the previous bound {bound}")
            bound = below
        multiplier = _decimal(p, f"{k}.multiplier", size_doc.get("multiplier"),
                              maximum=MAX_MULTIPLIER)
        if multiplier is not None:
            sizes.append(SizeClass(size_name, below, multiplier))
    unknown_multiplier = _decimal(p, key("unknown_size_multiplier"),
                                  doc.get("unknown_size_multiplier"), maximum=MAX_MULTIPLIER)

    plans: dict[str, Plan] = {}
    for name, raw_plan in _mapping(p, key("plans"), doc.get("plans")).items():
        plan_key = key(f"plans.{_in_key(name)}")
        plan = _plan(p, plan_key, str(name), raw_plan)
        if _name(p, plan_key, name) and plan:
            plans[str(name)] = plan
    if not plans:
        p.add(key("plans"), "at least one plan is needed")
    token_prices: dict[str, TokenPrice] = {}
    for model, raw_price in _mapping(p, key("token_prices"), doc.get("token_prices", {})).items():
        price_key = key(f"token_prices.{_in_key(model)}")
        price = _token_price(p, price_key, str(model), raw_price)
        if _name(p, price_key, model) and price:
            token_prices[str(model)] = price
    metered = [name for name, plan in plans.items() if plan.meter is Meter.TOKENS]
    if metered and not token_prices:
        p.add(key("token_prices"), f"plan(s) {', '.join(metered)} meter tokens: give the "
              "models' token prices")

    if len(p.items) > before or effective_from is None or unknown_multiplier is None:
        return None
    assert isinstance(currency, str)
    assert isinstance(minor_unit, int)
    return RateCard(
        version=str(version), effective_from=effective_from, effective_to=effective_to,
        currency=currency, minor_unit=minor_unit, tiers=tuple(tiers), size_classes=tuple(sizes),
        unknown_size_multiplier=unknown_multiplier, plans=plans, source=p.source,
        token_prices=token_prices,
    )


def _token_price(p: _Problems, at: str, model: str, raw: Any) -> TokenPrice | None:
    doc = _mapping(p, at, raw)
    _unknown_keys(p, at, doc, ["input_per_million", "output_per_million", "package"])
    before = len(p.items)
    per_token = [k for k in ("input_per_million", "output_per_million") if k in doc]
    if per_token and "package" in doc:
        p.add(at, "either prices per million input/output tokens or a package, not both")
    elif not per_token and "package" not in doc:
        p.add(at, "give input_per_million and output_per_million, or a package "
              "{tokens: N, price: P}")
    elif per_token and len(per_token) == 1:
        missing = ({"input_per_million", "output_per_million"} - set(per_token)).pop()
        p.add(f"{at}.{missing}", "missing: price input and output tokens both (0 is a price)")
    prices = {k: _decimal(p, f"{at}.{k}", doc[k], maximum=MAX_UNIT_PRICE) for k in per_token}
    tokens = price = None
    if "package" in doc:
        package = _mapping(p, f"{at}.package", doc["package"])
        _unknown_keys(p, f"{at}.package", package, ["tokens", "price"])
        size = package.get("tokens")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            p.add(f"{at}.package.tokens", f"must be a whole number of tokens above 0, got "
                  f"{_shown(size)}")
        else:
            tokens = size
        price = _decimal(p, f"{at}.package.price", package.get("price"), maximum=MAX_AMOUNT)
    if len(p.items) > before:
        return None
    return TokenPrice(model, prices.get("input_per_million"), prices.get("output_per_million"),
                      tokens, price)


def _tier(p: _Problems, at: str, name: str, raw: Any) -> Tier | None:
    doc = _mapping(p, at, raw)
    _unknown_keys(p, at, doc, ["products", "mode", "bands", "price", "reserved_price",
                               "time_of_use"])
    time_of_use = (_time_of_use(p, f"{at}.time_of_use", doc["time_of_use"])
                   if doc.get("time_of_use") is not None else None)
    products = doc.get("products")
    if not isinstance(products, list) or not products or not all(
        isinstance(x, str) for x in products
    ):
        p.add(f"{at}.products", "must list GPU product names or patterns (e.g. H100*)")
        products = []
    if doc.get("mode") is None:
        p.add(f"{at}.mode", "missing: graduated, volume or flat")
        return None
    before = len(p.items)
    mode = _enum(p, f"{at}.mode", doc.get("mode"), PricingMode, PricingMode.FLAT)
    if len(p.items) > before:
        return None  # prices cannot be checked against a mode we do not know
    bands: list[Band] = []
    if mode is PricingMode.FLAT:
        if "bands" in doc:
            p.add(f"{at}.bands", "a flat tier has one `price`, not bands")
        if "price" not in doc:
            p.add(f"{at}.price", "missing: a flat tier needs its price per unit")
        price = (_decimal(p, f"{at}.price", doc["price"], maximum=MAX_UNIT_PRICE)
                 if "price" in doc else None)
        if price is not None:
            bands.append(Band(None, price))
    else:
        raw_bands = doc.get("bands")
        if not isinstance(raw_bands, list) or not raw_bands:
            p.add(f"{at}.bands", f"a {mode.value} tier needs a list of bands")
            raw_bands = []
        previous = Decimal(0)
        for i, raw_band in enumerate(raw_bands):
            k = f"{at}.bands[{i}]"
            band_doc = _mapping(p, k, raw_band)
            _unknown_keys(p, k, band_doc, ["up_to", "price", "flat_fee"])
            last = i == len(raw_bands) - 1
            up_to = None
            if band_doc.get("up_to") is not None:
                if last:
                    p.add(f"{k}.up_to", "the last band is open-ended: leave out up_to")
                up_to = _decimal(p, f"{k}.up_to", band_doc["up_to"], maximum=MAX_AMOUNT)
                if up_to is not None and up_to <= previous:
                    p.add(f"{k}.up_to", f"must be above the previous band's {previous}")
                previous = up_to if up_to is not None else previous
            elif not last:
                p.add(f"{k}.up_to", "missing: only the last band is open-ended")
            price = _decimal(p, f"{k}.price", band_doc.get("price"), maximum=MAX_UNIT_PRICE)
            fee = _decimal(p, f"{k}.flat_fee", band_doc.get("flat_fee", 0), maximum=MAX_AMOUNT)
            if price is not None and fee is not None:
                bands.append(Band(up_to, price, fee))
    reserved = doc.get("reserved_price")
    reserved_price = None if reserved is None else _decimal(
        p, f"{at}.reserved_price", reserved, maximum=MAX_UNIT_PRICE)
    if not bands:
        return None
    return Tier(name, tuple(products), mode, tuple(bands), reserved_price, time_of_use)


def _time_of_use(p: _Problems, at: str, raw: Any) -> TimeOfUse | None:
    doc = _mapping(p, at, raw)
    _unknown_keys(p, at, doc, ["zone", "off_peak_hours", "off_peak_days", "off_peak_multiplier"])
    before = len(p.items)
    zone = doc.get("zone", "UTC")
    try:
        if not isinstance(zone, str) or not zone:
            raise ValueError(zone)
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        p.add(f"{at}.zone", f"must be an IANA time zone such as Europe/Berlin or UTC, got "
              f"{_shown(zone)}")
    windows: list[tuple[int, int]] = []
    raw_hours = doc.get("off_peak_hours", [])
    if not isinstance(raw_hours, list):
        p.add(f"{at}.off_peak_hours", "must be a list of [start, end) local hours")
        raw_hours = []
    for i, window in enumerate(raw_hours):
        if (not isinstance(window, list) or len(window) != 2 or not all(
                isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in window)
                or window[0] == window[1]):
            p.add(f"{at}.off_peak_hours[{i}]", f"must be [start, end], two different hours "
                  f"0-23 (end exclusive; [22, 6] wraps midnight), got {_shown(window)}")
        else:
            windows.append((window[0], window[1]))
    days = doc.get("off_peak_days", [])
    if not isinstance(days, list) or not all(d in DAYS for d in days):
        p.add(f"{at}.off_peak_days", f"must list days among {', '.join(DAYS)}, got "
              f"{_shown(days)}")
        days = []
    if not windows and not days and len(p.items) == before:
        p.add(at, "name off_peak_hours or off_peak_days: a tier without off-peak time needs "
              "no time_of_use")
    multiplier = _decimal(p, f"{at}.off_peak_multiplier", doc.get("off_peak_multiplier"),
                          maximum=Decimal(1))
    if len(p.items) > before or multiplier is None:
        return None
    return TimeOfUse(str(zone), tuple(windows), tuple(days), multiplier)


def _plan(p: _Problems, at: str, name: str, raw: Any) -> Plan | None:
    doc = _mapping(p, at, raw)
    _unknown_keys(p, at, doc, ["base_fee", "discount_pct", "minimum", "usage_range_gpu_hours",
                               "meter"])
    meter = _enum(p, f"{at}.meter", doc.get("meter"), Meter, Meter.GPU_TIME)
    base_fee = _decimal(p, f"{at}.base_fee", doc.get("base_fee", 0), maximum=MAX_AMOUNT)
    discount = _decimal(p, f"{at}.discount_pct", doc.get("discount_pct", 0),
                        maximum=Decimal(100))
    minimum = _decimal(p, f"{at}.minimum", doc.get("minimum", 0), maximum=MAX_AMOUNT)
    raw_range = doc.get("usage_range_gpu_hours")
    if not isinstance(raw_range, list) or len(raw_range) != 2:
        p.add(f"{at}.usage_range_gpu_hours", "must be [low, high] GPU-hours a month "
              "(high may be null for open-ended)")
        return None
    low = _decimal(p, f"{at}.usage_range_gpu_hours[0]", raw_range[0], maximum=MAX_AMOUNT)
    high = (None if raw_range[1] is None
            else _decimal(p, f"{at}.usage_range_gpu_hours[1]", raw_range[1],
                           maximum=MAX_AMOUNT))
    if low is not None and high is not None and high <= low:
        p.add(f"{at}.usage_range_gpu_hours", f"high {high} must be above low {low}")
    if base_fee is None or discount is None or minimum is None or low is None:
        return None
    return Plan(name, base_fee, discount, minimum, (low, high), meter)


def load_tenants(path: Path, cards: Sequence[RateCard] = ()) -> dict[str, Tenant]:
    """Tenants by name; plans and tiers are checked against the rate cards when given."""
    doc = _read_yaml(path)
    p = _Problems(str(path))
    raw_tenants = _mapping(p, "tenants", (doc or {}).get("tenants") if isinstance(doc, Mapping)
                           else doc)
    if not raw_tenants:
        p.add("tenants", "no tenants defined")
    plans = {name for card in cards for name in card.plans}
    tiers = {tier.name for card in cards for tier in card.tiers}
    tenants: dict[str, Tenant] = {}
    namespaces: dict[str, str] = {}
    for name, raw in raw_tenants.items():
        at = f"tenants.{_in_key(name)}"
        _name(p, at, name)
        if str(name).startswith("__"):
            p.add(at, "names starting with __ are reserved (__idle__, __unattributed__, ...)")
        t = _mapping(p, at, raw)
        _unknown_keys(p, at, t, ["plan", "basis", "isolation", "sla_class", "start", "end",
                                 "namespaces", "reservations", "credits", "display_name",
                                 "budget", "billing"])
        plan = t.get("plan")
        if not isinstance(plan, str):
            p.add(f"{at}.plan", "missing")
        elif cards and plan not in plans:
            p.add(f"{at}.plan", f"unknown plan {plan!r}; the rate cards define "
                  f"{', '.join(sorted(plans))}")
        start = _moment(p, f"{at}.start", t.get("start"))
        end = _moment(p, f"{at}.end", t.get("end"), required=False)
        if start and end and end <= start:
            p.add(f"{at}.end", "must be after start")
        ns = t.get("namespaces", [])
        if not isinstance(ns, list) or not all(isinstance(x, str) for x in ns):
            p.add(f"{at}.namespaces", "must be a list of namespace names")
            ns = []
        for namespace in ns:
            if namespace in namespaces:
                p.add(f"{at}.namespaces", f"{namespace!r} already belongs to "
                      f"{namespaces[namespace]}")
            namespaces[namespace] = str(name)
        reservations = []
        raw_res = t.get("reservations", [])
        for i, r in enumerate(raw_res if isinstance(raw_res, list) else []):
            k = f"{at}.reservations[{i}]"
            rd = _mapping(p, k, r)
            _unknown_keys(p, k, rd, ["tier", "gpus", "start", "end"])
            tier = rd.get("tier")
            if not isinstance(tier, str) or (cards and tier not in tiers):
                p.add(f"{k}.tier", f"unknown hardware tier {tier!r}")
            gpus = _decimal(p, f"{k}.gpus", rd.get("gpus"), maximum=MAX_GPUS)
            r_start = _moment(p, f"{k}.start", rd.get("start"))
            r_end = _moment(p, f"{k}.end", rd.get("end"), required=False)
            if gpus is not None and r_start is not None and isinstance(tier, str):
                reservations.append(Reservation(tier, gpus, r_start, r_end))
        credits = []
        raw_credits = t.get("credits", [])
        for i, c in enumerate(raw_credits if isinstance(raw_credits, list) else []):
            k = f"{at}.credits[{i}]"
            cd = _mapping(p, k, c)
            _unknown_keys(p, k, cd, ["amount", "granted"])
            amount = _decimal(p, f"{k}.amount", cd.get("amount"), maximum=MAX_AMOUNT)
            granted = _moment(p, f"{k}.granted", cd.get("granted"))
            if amount is not None and granted is not None:
                credits.append(CreditGrant(amount, granted))
        budget = (None if t.get("budget") is None
                  else _budget(p, f"{at}.budget", t["budget"], cards, tuple(ns)))
        if isinstance(plan, str) and start is not None:
            tenants[str(name)] = Tenant(
                name=str(name), plan=plan,
                basis=_enum(p, f"{at}.basis", t.get("basis"), Basis, Basis.ALLOCATION),
                isolation=_enum(p, f"{at}.isolation", t.get("isolation"), Isolation,
                                Isolation.POOL),
                sla_class=_enum(p, f"{at}.sla_class", t.get("sla_class"), SlaClass,
                                SlaClass.STANDARD),
                start=start, end=end, namespaces=tuple(ns), reservations=tuple(reservations),
                credits=tuple(credits), display_name=str(t.get("display_name", name)),
                budget=budget,
                billing=(None if t.get("billing") is None
                         else _billing_profile(p, f"{at}.billing", t["billing"])),
            )
    if p.items:
        raise ConfigError(p.items)
    return tenants


# --- the tenants file's `billing:` block: documents finance can file ------------------------

class BillingMode(StrEnum):
    CHARGEBACK = "chargeback"
    """Invoices with numbers, posted to the journal."""
    SHOWBACK = "showback"
    """Statements with the same figures, no invoice number, no journal lines."""


@dataclass(frozen=True)
class Party:
    """A legal entity as a document names it: the issuer, or the tenant billed."""

    legal_name: str
    address: tuple[str, ...] = ()
    tax_id: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class TaxRate:
    label: str
    """What the document calls it (`VAT 20%`, `GST`)."""
    rate_pct: Decimal


@dataclass(frozen=True)
class BillingProfile:
    """How a tenant is billed and booked: the bill-to block of its documents, the cost center
    and GL account the journal debits, its purchase order, payment terms and tax."""

    party: Party
    mode: BillingMode
    payment_terms_days: int
    cost_center: str | None = None
    gl_account: str | None = None
    purchase_order: str | None = None
    tax: TaxRate | None = None

    @property
    def payment_terms(self) -> str:
        return f"Net {self.payment_terms_days}"


_TEXT_LIMIT = 200
"""Longest name, address line or code a document prints on one line."""
MAX_PAYMENT_TERMS_DAYS = 365


def _text(p: _Problems, key: str, value: Any, *, required: bool) -> str | None:
    if value is None:
        if required:
            p.add(key, "missing")
        return None
    if not isinstance(value, str) or not value.strip():
        p.add(key, f"must be non-empty text, got {value!r}")
        return None
    if len(value) > _TEXT_LIMIT or any(ch in value for ch in "\r\n\t\x00"):
        p.add(key, f"must be one line of at most {_TEXT_LIMIT} characters")
        return None
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        # The PDF's built-in fonts print Latin-1 only; refuse here rather than at close.
        p.add(key, f"must be Latin-1 text (the documents' font has no other letters): "
              f"{value!r}")
        return None
    return value.strip()


def _party(p: _Problems, at: str, doc: Mapping[str, Any]) -> Party | None:
    """The `legal_name`, `address`, `tax_id` and `email` keys of `doc` as a Party."""
    legal_name = _text(p, f"{at}.legal_name", doc.get("legal_name"), required=True)
    raw_address = doc.get("address", [])
    address: list[str] = []
    if not isinstance(raw_address, list) or len(raw_address) > 6:
        p.add(f"{at}.address", "must be a list of at most 6 address lines")
    else:
        for i, line in enumerate(raw_address):
            text = _text(p, f"{at}.address[{i}]", line, required=True)
            if text is not None:
                address.append(text)
    tax_id = _text(p, f"{at}.tax_id", doc.get("tax_id"), required=False)
    email = _text(p, f"{at}.email", doc.get("email"), required=False)
    if email is not None and ("@" not in email or " " in email):
        p.add(f"{at}.email", f"not an e-mail address: {email!r}")
    if legal_name is None:
        return None
    return Party(legal_name, tuple(address), tax_id, email)


def _billing_profile(p: _Problems, at: str, raw: Any) -> BillingProfile | None:
    doc = _mapping(p, at, raw)
    before = len(p.items)
    _unknown_keys(p, at, doc, ["legal_name", "address", "tax_id", "email", "mode",
                               "payment_terms_days", "cost_center", "gl_account",
                               "purchase_order", "tax"])
    party = _party(p, at, doc)
    mode = _enum(p, f"{at}.mode", doc.get("mode"), BillingMode, BillingMode.CHARGEBACK)
    terms = doc.get("payment_terms_days")
    if isinstance(terms, bool) or not isinstance(terms, int) or not (
            0 <= terms <= MAX_PAYMENT_TERMS_DAYS):
        p.add(f"{at}.payment_terms_days",
              f"must be a whole number of days from 0 to {MAX_PAYMENT_TERMS_DAYS} (30 for "
              f"Net 30), got {terms!r}")
    cost_center = _text(p, f"{at}.cost_center", doc.get("cost_center"),
                        required=mode is BillingMode.CHARGEBACK)
    gl_account = _text(p, f"{at}.gl_account", doc.get("gl_account"),
                       required=mode is BillingMode.CHARGEBACK)
    purchase_order = _text(p, f"{at}.purchase_order", doc.get("purchase_order"),
                           required=False)
    tax = None
    if doc.get("tax") is not None:
        tax_doc = _mapping(p, f"{at}.tax", doc["tax"])
        _unknown_keys(p, f"{at}.tax", tax_doc, ["label", "rate_pct"])
        label = _text(p, f"{at}.tax.label", tax_doc.get("label"), required=True)
        rate = _decimal(p, f"{at}.tax.rate_pct", tax_doc.get("rate_pct"),
                        maximum=Decimal(100))
        if label is not None and rate is not None:
            tax = TaxRate(label, rate)
    if len(p.items) > before or party is None or not isinstance(terms, int):
        return None
    return BillingProfile(party, mode, terms, cost_center, gl_account, purchase_order, tax)


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """`2026-10` -> [2026-10-01T00:00Z, 2026-11-01T00:00Z)."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}", period):
            raise ValueError(period)  # strptime would also take `2026-1`
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise UserError(f"period must be a month written YYYY-MM, got {period!r}") from None
    if not EARLIEST <= start < LATEST:
        raise UserError(f"period {period}: must be a month from {EARLIEST:%Y-%m} to "
                        f"{LATEST - timedelta(days=1):%Y-%m}")
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


# --- budgets -----------------------------------------------------------------------------------
# A tenant's `budget:` block. Evaluated by models/planning/budgets.py; see docs/budgets.md.


class BudgetUnit(StrEnum):
    AMOUNT = "amount"
    """Money, in the rate card's currency: what the tenant is invoiced (credits applied)."""
    GPU_HOURS = "gpu_hours"
    """GPU-hours under the tenant's metering basis, as billed."""


class HoldAction(StrEnum):
    HOLD = "hold"
    """Kueue `stopPolicy: Hold` on the queue: no new admissions, running work continues."""
    NO_BORROWING = "no-borrowing"
    """The tenant's ClusterQueue borrows nothing from its cohort (borrowingLimit 0 on every
    resource of its flavors, set by the quota path; nominal quota unchanged)."""


class QueueKind(StrEnum):
    CLUSTER_QUEUE = "ClusterQueue"
    LOCAL_QUEUE = "LocalQueue"


DEFAULT_ACTUAL_THRESHOLDS = (Decimal(50), Decimal(80), Decimal(100))
MAX_THRESHOLD_PCT = Decimal(1000)
DEFAULT_FORECAST_THRESHOLDS = (Decimal(100),)
DEFAULT_LOCAL_QUEUE = "gpu-chargeback"
"""The LocalQueue the quota path writes in each tenant namespace."""


@dataclass(frozen=True)
class Enforcement:
    """What happens to the tenant's Kueue queue when it has spent its whole budget."""

    action: HoldAction
    queue: QueueKind
    name: str | None
    """The queue's name; None: the tenant's ClusterQueue as the quota path names it, or
    DEFAULT_LOCAL_QUEUE in each of its namespaces."""
    dry_run: bool
    """True (the default): the API server checks every change (admission included) and
    stores nothing."""


@dataclass(frozen=True)
class Budget:
    unit: BudgetUnit
    limit: Decimal
    """Per calendar month, in `currency` (AMOUNT) or GPU-hours."""
    currency: str | None
    actual_thresholds: tuple[Decimal, ...]
    """Percent of the limit that month-to-date spend crossing raises an alert."""
    forecast_thresholds: tuple[Decimal, ...]
    """Percent of the limit that the month-end point forecast reaching raises an alert."""
    enforcement: Enforcement | None
    """None: alerts only."""


def _budget(p: _Problems, at: str, raw: Any, cards: Sequence[RateCard],
            namespaces: tuple[str, ...]) -> Budget | None:
    doc = _mapping(p, at, raw)
    before = len(p.items)
    _unknown_keys(p, at, doc, ["amount", "currency", "gpu_hours", "thresholds", "enforce"])
    if ("amount" in doc) == ("gpu_hours" in doc):
        p.add(at, "give either `amount` (with `currency`) or `gpu_hours` per month")
        return None
    unit = BudgetUnit.AMOUNT if "amount" in doc else BudgetUnit.GPU_HOURS
    limit = _decimal(p, f"{at}.{unit.value}", doc[unit.value], maximum=MAX_AMOUNT)
    if limit is not None and limit <= 0:
        p.add(f"{at}.{unit.value}", f"must be above 0, got {limit}")
    currency = doc.get("currency")
    currencies = sorted({card.currency for card in cards})
    if unit is BudgetUnit.GPU_HOURS:
        if currency is not None:
            p.add(f"{at}.currency", "a GPU-hours budget has no currency")
    elif not isinstance(currency, str):
        p.add(f"{at}.currency", "missing: the currency of `amount` (the rate card's)")
    elif cards and currency not in currencies:
        p.add(f"{at}.currency", f"{currency!r} is not the rate cards' currency "
              f"({', '.join(currencies)})")
    thresholds = _mapping(p, f"{at}.thresholds", doc.get("thresholds", {}))
    _unknown_keys(p, f"{at}.thresholds", thresholds, ["actual", "forecast"])
    actual = _thresholds(p, f"{at}.thresholds.actual", thresholds.get("actual"),
                         DEFAULT_ACTUAL_THRESHOLDS)
    forecast = _thresholds(p, f"{at}.thresholds.forecast", thresholds.get("forecast"),
                           DEFAULT_FORECAST_THRESHOLDS)
    enforcement = (None if doc.get("enforce") is None
                   else _enforcement(p, f"{at}.enforce", doc["enforce"], namespaces))
    if len(p.items) > before or limit is None:
        return None
    return Budget(unit, limit, currency if unit is BudgetUnit.AMOUNT else None, actual,
                  forecast, enforcement)


def _thresholds(p: _Problems, at: str, raw: Any, default: tuple[Decimal, ...]
                ) -> tuple[Decimal, ...]:
    if raw is None:
        return default
    if not isinstance(raw, list):
        p.add(at, f"must be a list of percentages of the budget, got {_shown(raw)}")
        return default
    values = [_decimal(p, f"{at}[{i}]", v, maximum=MAX_THRESHOLD_PCT) for i, v in enumerate(raw)]
    out = sorted(v for v in values if v is not None)
    for i, value in enumerate(out):
        if value <= 0:
            p.add(at, f"a threshold must be above 0 percent, got {value}")
        elif i and value == out[i - 1]:
            p.add(at, f"{value} is listed twice")
    return tuple(out)


def _enforcement(p: _Problems, at: str, raw: Any, namespaces: tuple[str, ...]
                 ) -> Enforcement | None:
    doc = _mapping(p, at, raw)
    before = len(p.items)
    _unknown_keys(p, at, doc, ["action", "queue", "name", "dry_run"])
    action = _enum(p, f"{at}.action", doc.get("action"), HoldAction, HoldAction.HOLD)
    queue = _enum(p, f"{at}.queue", doc.get("queue"), QueueKind, QueueKind.CLUSTER_QUEUE)
    name = doc.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 253
                             or not _DNS_SUBDOMAIN.match(name)):
        p.add(f"{at}.name", f"must be a Kubernetes object name (DNS-1123 subdomain), got "
              f"{_shown(name)}")
    if action is HoldAction.NO_BORROWING:
        # borrowingLimit sits inside resourceGroups, which the quota path writes (one writer
        # of that list): it acts on the ClusterQueue the quota path names after the tenant.
        if queue is QueueKind.LOCAL_QUEUE:
            p.add(f"{at}.queue", "no-borrowing acts on a ClusterQueue (a LocalQueue does not "
                  "borrow); use queue: ClusterQueue or action: hold")
        if name is not None:
            p.add(f"{at}.name", "no-borrowing acts on the ClusterQueue the quota path writes "
                  "for the tenant; drop `name` or use action: hold")
    if queue is QueueKind.LOCAL_QUEUE and not namespaces:
        p.add(f"{at}.queue", "a LocalQueue hold needs the tenant's `namespaces`")
    dry_run = doc.get("dry_run", True)
    if not isinstance(dry_run, bool):
        p.add(f"{at}.dry_run", f"must be true or false, got {_shown(dry_run)}")
    if len(p.items) > before:
        return None
    return Enforcement(action, queue, name, bool(dry_run))


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
