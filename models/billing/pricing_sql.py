"""The set-wise pricing engine: every tenant's month netted at once in DuckDB SQL.

`models.billing.pricing.price_invoice` nets one tenant's hours in Python decimals, which is
most of its time for a tenant with thousands of usage rows. Here the usage rows of all tenants
are summed, netted against their reservations hour by hour (DESIGN.md billing steps 1-2) and
summed per tier and size class in SQL over BIGINT micro-GPU-hours (integers: exact), with the
same largest-remainder allocations as `net_hour`. Only the per-tenant sums (a few rows each)
come back as decimals, converted exactly, and go through `price_netted`, the same code that
prices every line of `price_invoice`, so both engines produce the same invoices.

A tenant whose netting needs `net_hour`'s two-way table (an hour with two or more size
classes against two or more reservations of one tier), or holds a reservation that starts or
ends inside an hour or reserves GPUs at more than 6 decimals, is priced by `price_invoice`
instead: `PricedMonth.fallback` counts them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import overload

import duckdb
import numpy as np
import pyarrow as pa

from models.billing.pricing import (
    HOUR,
    ZERO,
    HourUse,
    Invoice,
    ModelWork,
    NettedHour,
    UsageHour,
    held_reservations,
    price_invoice,
    price_netted,
    reserved_gpu_hours,
)
from models.billing.rate_cards import RateCard, Reservation, Tenant, month_bounds

MICRO = 1_000_000
"""Micro-GPU-hours per GPU-hour: quantities have 6 decimals (pricing.QUANTITY)."""
HOUR_US = 3_600_000_000
_USES = {use.value: use for use in HourUse}

_NAMES = pa.dictionary(pa.int32(), pa.string())
CELLS_SCHEMA = pa.schema([
    ("hour", pa.timestamp("us", tz="UTC")), ("hardware_tier", _NAMES),
    ("size_class", _NAMES), ("reservation_id", _NAMES), ("hour_use", _NAMES),
    ("gpu_hours", pa.decimal128(24, 6)),
])
"""The netting cells as Arrow columns (models.billing.lifecycle stores them, decoded)."""


def micro_decimal(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """BIGINT micro-units as an Arrow decimal128(24, 6) column, exactly: a decimal128 holds
    its unscaled value as a 128-bit integer, so the micro-units are its low word."""
    ints = values.to_numpy().astype(np.int64, copy=False)
    words = np.empty(2 * len(ints), dtype=np.int64)
    words[0::2] = ints
    words[1::2] = ints >> 63  # the sign, extended into the high word
    return pa.Array.from_buffers(pa.decimal128(24, 6), len(ints),
                                 [None, pa.py_buffer(words.tobytes())])


class NettingCells(Sequence[NettedHour]):
    """A tenant's netting cells held as Arrow columns (`CELLS_SCHEMA`), `NettedHour`s made
    only when read: a month of 10,000 tenants holds millions of cells, and the close stores
    them as columns (`arrow`) without making one."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def arrow(self) -> pa.Table:
        return self._table

    def __len__(self) -> int:
        return int(self._table.num_rows)

    @overload
    def __getitem__(self, index: int) -> NettedHour: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[NettedHour]: ...

    def __getitem__(self, index: int | slice) -> NettedHour | Sequence[NettedHour]:
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return next(iter(NettingCells(self._table.slice(index, 1))))

    def __iter__(self) -> Iterator[NettedHour]:
        columns = [self._table.column(name).to_pylist() for name in CELLS_SCHEMA.names]
        for hour, tier, size, rid, use, gpu_hours in zip(*columns, strict=True):
            yield NettedHour(hour, tier, size, rid, _USES[use], gpu_hours)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"NettingCells({len(self)} cells)"


@dataclass(frozen=True)
class PricedMonth:
    invoices: dict[str, Invoice]
    """Every tenant's invoice, by name."""
    fallback: int
    """Tenants priced by `price_invoice` (see the module's docstring)."""


def _simple(r: Reservation, lo: datetime, hi: datetime) -> bool:
    """Whether the reservation holds the same whole number of micro-GPU-hours in each of its
    hours of [lo, hi), as `_hourly_capacity` then gives it (no allocation over its hours)."""
    def on_hour(moment: datetime) -> bool:
        return moment == moment.replace(minute=0, second=0, microsecond=0)
    return ((r.start <= lo or on_hour(r.start))
            and (r.end is None or r.end >= hi or on_hour(r.end))
            and (r.gpus * MICRO) == (r.gpus * MICRO).to_integral_value())


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def price_all(
    con: duckdb.DuckDBPyConnection,
    card: RateCard,
    tenants: Mapping[str, Tenant],
    period: str,
    usage: str,
    *,
    credit_available: Mapping[str, Decimal] | None = None,
    work: Mapping[str, Iterable[ModelWork]] | None = None,
) -> PricedMonth:
    """The invoice of every tenant of `tenants` for `period`, as `price_invoice` would price
    it from the rows of `usage` (a table or view of `con` with columns tenant, hour,
    hardware_tier, size_class and gpu_hours_micro, a BIGINT of millionths of a GPU-hour; rows
    of other tenants are left out). `credit_available` and `work` are per tenant, as in
    `price_invoice`; a tenant missing from them gets its default."""
    lo, hi = month_bounds(period)
    try:
        return _price_all(con, card, tenants, period, usage, lo, hi,
                          credit_available or {}, work or {})
    finally:
        for view in _VIEWS:
            with contextlib.suppress(duckdb.Error):
                con.unregister(view)
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _price_all(
    cur: duckdb.DuckDBPyConnection, card: RateCard, tenants: Mapping[str, Tenant], period: str,
    usage: str, lo: datetime, hi: datetime, credit_available: Mapping[str, Decimal],
    work: Mapping[str, Iterable[ModelWork]],
) -> PricedMonth:
    # Tenants, tiers, size classes and reservation ids are numbered in sorted order and SQL
    # works on the numbers: grouping and sorting integers is several times faster than
    # strings, and the order is the same.
    names = sorted(tenants)
    cur.register("p_tenants", pa.table({"name": pa.array(names, pa.string()),
                                        "id": pa.array(range(len(names)), pa.int32())}))
    kinds = cur.execute(f"SELECT DISTINCT hardware_tier, size_class FROM {usage} "
                        "SEMI JOIN p_tenants ON tenant = name").fetchall()
    for tier_name in sorted({tier_name for tier_name, _ in kinds}):
        card.tier(tier_name)  # an unknown tier is a bug upstream, not a free hour
    held = {name: held_reservations(tenants[name], lo, hi) for name in names}
    fallback = {name for name in names
                if not all(_simple(h.reservation, lo, hi) for h in held[name])}
    codes = _Codes(tiers=sorted({t.name for t in card.tiers}),
                   sizes=sorted({size for _, size in kinds}),
                   rids=sorted(h.reservation_id for name in names if name not in fallback
                               for h in held[name]))
    tier_code = {name: n for n, name in enumerate(codes.tiers)}
    rid_code = {name: n for n, name in enumerate(codes.rids)}
    res_rows: dict[str, list[int]] = {k: [] for k in
                                      ("tenant", "rid", "tier", "first", "last", "cap", "exp")}
    for number, name in enumerate(names):
        if name in fallback:
            continue
        for h in held[name]:
            r = h.reservation
            exponent = r.gpus.as_tuple().exponent
            assert isinstance(exponent, int), "a held reservation's GPUs are finite"
            for key, value in (("tenant", number), ("rid", rid_code[h.reservation_id]),
                               ("tier", tier_code[r.tier]),
                               ("first", _epoch_us(max(r.start, lo).replace(
                                   minute=0, second=0, microsecond=0))),
                               ("last", _epoch_us(min(r.end or hi, hi))),
                               ("cap", int(r.gpus * MICRO)), ("exp", exponent)):
                res_rows[key].append(value)
    off_peak: dict[str, list[int]] = {"tier": [], "h": []}
    for tier in card.tiers:
        if tier.time_of_use is None:
            continue
        moment = lo
        while moment < hi:
            if tier.time_of_use.off_peak(moment):
                off_peak["tier"].append(tier_code[tier.name])
                off_peak["h"].append(_epoch_us(moment))
            moment += HOUR
    cur.register("p_reservations", pa.table({key: pa.array(values, pa.int64())
                                             for key, values in res_rows.items()}))
    cur.register("p_off_peak", pa.table({key: pa.array(values, pa.int64())
                                         for key, values in off_peak.items()}))
    cur.execute(f"""
        CREATE OR REPLACE TEMP TABLE p_used AS
        SELECT t.id AS tenant, epoch_us(hour) AS h,
               list_position($tiers, hardware_tier) - 1 AS tier,
               list_position($sizes, size_class) - 1 AS size,
               sum(gpu_hours_micro)::BIGINT AS used
        FROM {usage} u JOIN p_tenants t ON u.tenant = t.name
        GROUP BY ALL""", {"tiers": codes.tiers, "sizes": codes.sizes})
    _check(cur, period, lo, hi)
    cur.execute(_NETTING)
    fallback |= {names[number] for (number,) in cur.execute(
        "SELECT DISTINCT tenant FROM p_keys WHERE n_res >= 2 AND n_sizes >= 2 AND cov > 0"
    ).fetchall()}
    cur.register("p_fallback", pa.table({"tenant": pa.array(
        sorted(names.index(name) for name in fallback), pa.int64())}))
    totals = _totals(cur, names, codes)
    cells = cur.sql("""
        SELECT tenant, h, tier, size, rid, use, gpu_hours::BIGINT
        FROM p_cells ANTI JOIN p_fallback USING (tenant)
        ORDER BY tenant, h, tier, size NULLS LAST, rid NULLS FIRST""").to_arrow_table()
    rows_per_tenant = np.bincount(cells.column(0).to_numpy(), minlength=len(names))
    cells = pa.table([
        cells.column(1).cast(pa.timestamp("us")).cast(CELLS_SCHEMA.field("hour").type),
        codes.column(cells.column(2), codes.tiers), codes.column(cells.column(3), codes.sizes),
        codes.column(cells.column(4), codes.rids),
        codes.column(cells.column(5), [use.value for use in _USE_CODES]),
        micro_decimal(cells.column(6))], schema=CELLS_SCHEMA)
    invoices: dict[str, Invoice] = {}
    offset = 0
    for number, name in enumerate(names):
        tenant = tenants[name]
        if name in fallback:
            invoices[name] = price_invoice(
                tenant, card, period, _usage_of(cur, number, codes),
                credit_available=credit_available.get(name), work=work.get(name, ()))
            continue
        count = int(rows_per_tenant[number])
        used, covered, off = totals.get(name, ({}, {}, {}))
        invoices[name] = price_netted(
            tenant, card, period,
            {key: (gpu_hours, covered.get(key, ZERO)) for key, gpu_hours in used.items()},
            off, held[name],
            {h.reservation_id: reserved_gpu_hours(h.reservation, lo, hi) for h in held[name]},
            NettingCells(cells.slice(offset, count)),
            credit_available=credit_available.get(name), work=work.get(name, ()))
        offset += count
    return PricedMonth(invoices, len(fallback))


_USE_CODES = (HourUse.ON_DEMAND, HourUse.COVERED, HourUse.UNUSED)
"""`use` in SQL: 0, 1, 2."""


@dataclass(frozen=True)
class _Codes:
    """The names behind SQL's numbers: each list sorted, a name's number its index."""

    tiers: list[str]
    sizes: list[str]
    rids: list[str]

    @staticmethod
    def column(numbers: pa.ChunkedArray, names: list[str]) -> pa.Array:
        """Numbers (nulls kept) as the dictionary-encoded names they stand for."""
        return pa.DictionaryArray.from_arrays(
            numbers.combine_chunks().cast(pa.int32()), pa.array(names, pa.string()))


def _check(cur: duckdb.DuckDBPyConnection, period: str, lo: datetime, hi: datetime) -> None:
    """`price_invoice`'s check of its input: every hour in the period."""
    outside = cur.execute(
        "SELECT min(h) FROM p_used WHERE h < $lo OR h >= $hi",
        {"lo": _epoch_us(lo), "hi": _epoch_us(hi)}).fetchall()[0][0]
    if outside is not None:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=outside)
        raise ValueError(f"usage hour {moment.isoformat()} is outside period {period}")


def _usage_of(cur: duckdb.DuckDBPyConnection, number: int, codes: _Codes) -> list[UsageHour]:
    rows = cur.execute(
        "SELECT make_timestamp(h), tier, size, used FROM p_used WHERE tenant = ? "
        "ORDER BY h, tier, size", [number]).fetchall()
    return [UsageHour(hour.replace(tzinfo=UTC), codes.tiers[tier], codes.sizes[size],
                      Decimal(used).scaleb(-6))
            for hour, tier, size, used in rows]


_TotalsOf = tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], Decimal],
                  dict[tuple[str, str], Decimal]]


def _totals(cur: duckdb.DuckDBPyConnection, names: Sequence[str], codes: _Codes
            ) -> dict[str, _TotalsOf]:
    """Per tenant, tier and size class: the GPU-hours, the covered GPU-hours and the off-peak
    on-demand GPU-hours, as the decimals `price_invoice` sums them to (the exponents too:
    a covered sum made only of whole reservations keeps their GPUs' exponent)."""
    out: dict[str, _TotalsOf] = {}
    for number, tier, size, used, covered, exponent, off in cur.execute("""
            WITH c AS (
                SELECT tenant, tier, size,
                       sum(gpu_hours) FILTER (WHERE use = 1) AS covered,
                       min(coalesce(raw_exp, -6)) FILTER (WHERE use = 1) AS exponent,
                       sum(gpu_hours) FILTER (WHERE use = 0 AND o.h IS NOT NULL)
                           AS off
                FROM p_cells LEFT JOIN p_off_peak o USING (tier, h)
                WHERE size IS NOT NULL GROUP BY ALL),
            u AS (SELECT tenant, tier, size, sum(used) AS used FROM p_used GROUP BY ALL)
            SELECT tenant, tier, size, u.used, c.covered, c.exponent, c.off
            FROM u LEFT JOIN c USING (tenant, tier, size)
            ANTI JOIN p_fallback USING (tenant)""").fetchall():
        used_of, covered_of, off_of = out.setdefault(names[number], ({}, {}, {}))
        key = (codes.tiers[tier], codes.sizes[size])
        used_of[key] = Decimal(int(used)).scaleb(-6)
        if covered is not None:
            covered_of[key] = Decimal(int(covered)).scaleb(-6).quantize(
                Decimal(1).scaleb(min(0, exponent)))
        if off is not None:
            off_of[key] = Decimal(int(off)).scaleb(-6)
    return out


_VIEWS = ("p_tenants", "p_reservations", "p_off_peak", "p_fallback")
_TABLES = ("p_used", "p_capacity", "p_keys", "p_by_size", "p_by_reservation", "p_cells")

_NETTING = """
-- Reserved GPU-hours per hour: one row per reservation and hour it is held in the period.
CREATE OR REPLACE TEMP TABLE p_capacity AS
SELECT tenant, tier, unnest(range(first, last, 3600000000)) AS h, rid, cap, exp
FROM p_reservations;

-- The hours and tiers with a reservation, their usage U and capacity C; cov = min(U, C).
CREATE OR REPLACE TEMP TABLE p_keys AS
WITH c AS (SELECT tenant, h, tier, sum(cap)::BIGINT AS c, count(*) AS n_res
           FROM p_capacity GROUP BY ALL),
     u AS (SELECT tenant, h, tier, sum(used)::BIGINT AS u, count(*) AS n_sizes
           FROM p_used SEMI JOIN (SELECT DISTINCT tenant, tier FROM p_reservations)
                USING (tenant, tier)
           GROUP BY ALL)
SELECT tenant, h, tier, c.c, coalesce(u.u, 0) AS u, n_res, coalesce(n_sizes, 0) AS n_sizes,
       least(c.c, coalesce(u.u, 0)) AS cov
FROM c LEFT JOIN u USING (tenant, h, tier);

-- net_hour's allocations, largest remainder in integers: covered per size class (ties to the
-- earlier size class) and per reservation (ties to the earlier id). Most hours need none
-- (nothing or everything covered, or one size class or one reservation): only the others go
-- through the window functions.
CREATE OR REPLACE TEMP TABLE p_by_size AS
WITH s AS (
    SELECT tenant, h, tier, size, used, cov, n_res, n_sizes,
           (cov::HUGEINT * used // k.u)::BIGINT AS floor,
           (cov::HUGEINT * used % k.u)::BIGINT AS remainder
    FROM p_used JOIN p_keys k USING (tenant, h, tier)
    WHERE cov > 0 AND cov < k.u AND n_sizes > 1)
SELECT tenant, h, tier, size, used, cov, n_res, n_sizes,
       CASE WHEN cov = 0 THEN 0 WHEN cov = k.u THEN used ELSE cov END AS covered
FROM p_used JOIN p_keys k USING (tenant, h, tier)
WHERE NOT (cov > 0 AND cov < k.u AND n_sizes > 1)
UNION ALL
SELECT tenant, h, tier, size, used, cov, n_res, n_sizes,
       floor + CASE WHEN row_number() OVER w <= cov - sum(floor) OVER (PARTITION BY tenant, h, tier)
                    THEN 1 ELSE 0 END
FROM s WINDOW w AS (PARTITION BY tenant, h, tier ORDER BY remainder DESC, size);

CREATE OR REPLACE TEMP TABLE p_by_reservation AS
WITH r AS (
    SELECT tenant, h, tier, rid, cap, exp, cov, n_res, n_sizes, k.c,
           (cov::HUGEINT * cap // k.c)::BIGINT AS floor,
           (cov::HUGEINT * cap % k.c)::BIGINT AS remainder
    FROM p_capacity JOIN p_keys k USING (tenant, h, tier)
    WHERE cov > 0 AND cov < k.c AND n_res > 1)
SELECT tenant, h, tier, rid, cap, exp, cov, n_res, n_sizes, k.c,
       CASE WHEN cov = 0 THEN 0 WHEN cov = k.c THEN cap ELSE cov END AS covered
FROM p_capacity JOIN p_keys k USING (tenant, h, tier)
WHERE NOT (cov > 0 AND cov < k.c AND n_res > 1)
UNION ALL
SELECT tenant, h, tier, rid, cap, exp, cov, n_res, n_sizes, c,
       floor + CASE WHEN row_number() OVER w <= cov - sum(floor) OVER (PARTITION BY tenant, h, tier)
                    THEN 1 ELSE 0 END
FROM r WINDOW w AS (PARTITION BY tenant, h, tier ORDER BY remainder DESC, rid);

-- The cells (NettedHour): raw_exp marks a covered cell that is a reservation's whole hour
-- (`net_hour` passes its GPUs through), whose exponent a covered sum keeps.
CREATE OR REPLACE TEMP TABLE p_cells AS
SELECT tenant, h, tier, size, NULL::BIGINT AS rid, 0 AS use, used AS gpu_hours,
       NULL::INTEGER AS raw_exp
FROM p_used ANTI JOIN p_keys USING (tenant, h, tier)
WHERE used <> 0
UNION ALL
SELECT tenant, h, tier, size, NULL, 0, used - covered, NULL
FROM p_by_size WHERE used - covered <> 0
UNION ALL
SELECT s.tenant, s.h, s.tier, s.size, r.rid, 1, r.covered,
       CASE WHEN r.cov = r.c THEN r.exp END
FROM p_by_size s JOIN p_by_reservation r USING (tenant, h, tier)
WHERE s.n_sizes = 1 AND r.covered <> 0
UNION ALL
SELECT s.tenant, s.h, s.tier, s.size, r.rid, 1, s.covered, NULL
FROM p_by_size s JOIN p_by_reservation r USING (tenant, h, tier)
WHERE s.n_sizes > 1 AND s.n_res = 1 AND s.covered <> 0
UNION ALL
SELECT tenant, h, tier, NULL, rid, 2, cap - covered, NULL
FROM p_by_reservation WHERE cap - covered <> 0;
"""
