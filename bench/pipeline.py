"""Pipeline throughput against DuckDB's raw engine: `.venv/bin/python -m bench.pipeline`.

At 1x, 4x and 16x a base size (N days of the default 64-GPU cluster at 60 s samples; the
simulator's `scale` copies the cluster), and once for a whole 30-day month of the demo cluster,
each step runs through the code the Dagster assets run, then its raw DuckDB equivalent on the
same spool files in the same run:

  step          pipeline (what the assets call)                   raw DuckDB
  ingest        pipelines.ingest.assets.load_spool_day            CREATE TABLE AS SELECT * FROM
                (warehouse.load_day), per day                     read_parquet(all usage files)
  conservation  check_conservation, per day (the blocking         GROUP BY device and interval
                check)                                            over the Parquet: summed
                                                                  GPU-seconds against the
                                                                  capacity
  aggregation   rollup_hourly + rollup_daily, per day             GROUP BY hour, tenant,
                                                                  gpu_product, model over the
                                                                  Parquet
  close         assets tenant_bills (pricing), invoices           GROUP BY tenant, gpu_product
                (close=True), invoice_exports, focus_export       over the Parquet (GPU-hours to
                                                                  bill, unpriced)
  marts         models.marts.publish_marts                        one DuckDB file per tenant with
                                                                  its raw hourly rows

Generation, the pipeline and the raw engine each run in their own process, so each peak RSS
(from wait4) is that step's own; generation is not timed."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
START = datetime(2026, 9, 1, tzinfo=UTC)
PERIOD = "2026-09"
KEPT = "\n## Where the time goes (profiles; kept when make bench rewrites this page)\n"
STEPS = ("ingest", "conservation", "aggregation", "close", "marts")
NOTES = """How to read the ratios: the raw queries do strictly less than the pipeline. Raw ingest
copies rows; the pipeline also drops duplicate `sample_id`s (a window over the day), apportions
shared endpoints by request work, attaches tier and size class and replaces the day in one
transaction. Raw aggregation scans the Parquet once for the whole run; the pipeline rolls up
each day from the ledger table in exact DECIMAL(38, 6) sums, with the peak-concurrency pass.
Raw conservation asks the check's question of the whole run in one GROUP BY (per device and
interval, summed GPU-seconds against the capacity); the pipeline asks it day by day of the
ledger, also counts sources, lets a collection gap excuse a shortfall, and records what
passed. Raw close only sums GPU-hours; the pipeline prices every tenant in Decimal, finalizes, and
renders a PDF, CSV and JSON per invoice plus the FOCUS export, so its cost follows the number
of tenants more than the number of rows. Raw marts copy each tenant's hourly rows into a file;
`publish_marts` also stages invoices, rates, reservations and daily cost estimates, and writes
the finance and operator marts. Peak RSS is the whole process (Python, DuckDB, Dagster
imports), measured apart from simulation."""


# ---------------------------------------------------------------- child processes


def scaled_tenants(path: Path, scale: int) -> Path:
    """The demo tenants plus `<tenant>-<r>` for every copy r of the cluster (same plans)."""
    config = yaml.safe_load((DEMO / "tenants.yaml").read_text())
    tenants = config["tenants"]
    for r in range(1, scale):
        for name, tenant in list(tenants.items()):
            if "-" in name:
                continue
            # A deep copy: YAML would write shared objects as aliases, which the loader refuses.
            copy = deepcopy(tenant)
            copy["namespaces"] = [f"{ns}-{r}" for ns in tenant.get("namespaces", [])]
            tenants[f"{name}-{r}"] = copy
    out = path / "tenants.yaml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def generate(root: Path, scale: int, days: int, interval: int) -> None:
    from collectors.simulate import simulate_to_spool

    simulate_to_spool(root / "spool", START, days, interval_s=interval, scale=scale)
    scaled_tenants(root, scale)


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = action()
    return time.perf_counter() - t0, value


def measure_pipeline(root: Path, days: int) -> dict[str, Any]:
    import dagster as dg

    from models.billing.rate_cards import load_rate_cards, rate_card_for
    from models.ledger import warehouse
    from pipelines.billing import assets as billing
    from pipelines.ingest.assets import load_spool_day
    from pipelines.resources import BillingConfigResource, OutputsResource, WarehouseResource

    spool = root / "spool"
    db = root / "warehouse.duckdb"
    cards = load_rate_cards(DEMO / "rate-card.yaml")
    day_list = [(START + timedelta(days=i)).date() for i in range(days)]
    times = dict.fromkeys(STEPS, 0.0)
    con = warehouse.connect(db)
    warehouse.create_schema(con)

    def ingest(day: date) -> None:
        loaded = load_spool_day(con, spool, day, rate_card_for(cards, day))
        if loaded.quarantined:
            raise SystemExit(f"bench: unreadable spool files {loaded.quarantined}")

    def aggregate(day: date) -> None:
        warehouse.rollup_hourly(con, day)
        warehouse.rollup_daily(con, day)

    for day in day_list:
        t0 = time.perf_counter()
        ingest(day)
        times["ingest"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        violations = warehouse.check_conservation(con, day)
        times["conservation"] += time.perf_counter() - t0
        if violations:
            raise SystemExit(f"bench: {day} breaks conservation: {violations[:3]}")
    for day in day_list:
        t0 = time.perf_counter()
        aggregate(day)
        times["aggregation"] += time.perf_counter() - t0
    ledger_rows, hourly_rows = (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                                for t in ("ledger", "usage_hourly"))
    con.close()

    # The billing assets themselves, invoked directly (no run storage, no event log).
    warehouse_db = WarehouseResource(path=str(db))
    config = BillingConfigResource(rate_card_path=str(DEMO / "rate-card.yaml"),
                                   tenants_path=str(root / "tenants.yaml"),
                                   finance_path=str(DEMO / "finance.yaml"))
    outputs = OutputsResource(exports_path=str(root / "exports"), marts_path=str(root / "marts"))

    # One instance for the four assets, made before the clock starts, as a Dagster run has
    # one (an ephemeral instance per asset cost 1.7 s each, a third of the month's close).
    instance = dg.DagsterInstance.ephemeral()

    def close() -> int:
        def context() -> dg.AssetExecutionContext:
            return dg.build_asset_context(partition_key=f"{PERIOD}-01", instance=instance)

        billing.tenant_bills(context(), warehouse_db=warehouse_db, billing=config)
        billing.invoices(context(), config=billing.InvoicesConfig(close=True),
                         warehouse_db=warehouse_db)
        billing.invoice_exports(context(), warehouse_db=warehouse_db, billing=config,
                                outputs=outputs)
        focus = getattr(billing, "focus_export", None)
        if focus is not None:
            focus(context(), warehouse_db=warehouse_db, billing=config, outputs=outputs)
        return sum(1 for _ in (root / "exports").rglob("*.*"))

    times["close"], export_files = _timed(close)

    marts: int | None = None
    try:
        from models.marts import publish_marts
    except ImportError:
        times["marts"] = math.nan
    else:
        tenants = config.tenants()
        con = warehouse.connect(db)
        try:
            times["marts"], paths = _timed(
                lambda: publish_marts(con, root / "marts", tenants))
            marts = len(paths)
        finally:
            con.close()
    return {"times": times, "ledger_rows": ledger_rows, "hourly_rows": hourly_rows,
            "export_files": export_files, "marts": marts}


def measure_raw(root: Path, marts: int | None) -> dict[str, Any]:
    import duckdb

    files = f"'{root / 'spool' / 'usage'}/**/*.parquet'"
    times = dict.fromkeys(STEPS, math.nan)
    con = duckdb.connect(str(root / "raw.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    times["ingest"], _ = _timed(lambda: con.execute(
        f"CREATE TABLE raw AS SELECT * FROM read_parquet({files})"))
    times["conservation"], _ = _timed(lambda: con.execute(
        "CREATE TABLE raw_conservation AS SELECT cluster, node, gpu_uuid, window_start, "
        "duration_s, sum(allocated_gpu_seconds) AS allocated_gpu_seconds, "
        "max(gpu_equivalents) * duration_s AS capacity_gpu_seconds "
        f"FROM read_parquet({files}) GROUP BY cluster, node, gpu_uuid, window_start, duration_s "
        "HAVING abs(sum(allocated_gpu_seconds) - max(gpu_equivalents) * duration_s) "
        "> 1e-6 * count(*) * greatest(duration_s, 1)"))
    times["aggregation"], _ = _timed(lambda: con.execute(
        "CREATE TABLE raw_hourly AS SELECT date_trunc('hour', window_start) AS hour, tenant, "
        "gpu_product, model, sum(allocated_gpu_seconds) AS allocated_gpu_seconds, "
        f"sum(used_gpu_seconds) AS used_gpu_seconds FROM read_parquet({files}) GROUP BY ALL"))
    times["close"], _ = _timed(lambda: con.execute(
        "CREATE TABLE raw_bill AS SELECT tenant, gpu_product, "
        f"sum(allocated_gpu_seconds) / 3600 AS gpu_hours FROM read_parquet({files}) "
        "GROUP BY ALL"))
    rows = con.execute("SELECT count(*) FROM raw").fetchone()
    if marts:
        tenants = [t for (t,) in con.execute(
            "SELECT DISTINCT tenant FROM raw_hourly WHERE tenant NOT LIKE '\\_\\_%' ESCAPE '\\' "
            "ORDER BY 1 LIMIT ?", [marts]).fetchall()]

        def publish() -> None:
            folder = root / "raw-marts"
            folder.mkdir(exist_ok=True)
            for i, tenant in enumerate(tenants):
                con.execute(f"ATTACH '{folder / f'{i}.duckdb'}' AS m")
                con.execute("CREATE TABLE m.hourly AS SELECT * FROM raw_hourly WHERE tenant = ?",
                            [tenant])
                con.execute("DETACH m")

        times["marts"], _ = _timed(publish)
    con.close()
    return {"times": times, "rows": rows[0] if rows else 0}


def child(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["generate", "pipeline", "raw"])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--marts", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "generate":
        generate(args.root, args.scale, args.days, args.interval)
        return
    result = (measure_pipeline(args.root, args.days) if args.what == "pipeline"
              else measure_raw(args.root, args.marts))
    (args.root / f"{args.what}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- the driver


@dataclass
class Run:
    label: str
    scale: int
    days: int
    rows: int = 0
    input_rows: int = 0
    spool_mb: float = 0.0
    pipeline: dict[str, float] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)
    pipeline_rss_mb: float = 0.0
    raw_rss_mb: float = 0.0
    generate_s: float = 0.0
    marts: int | None = None


def spawn(what: str, root: Path, *options: str) -> tuple[float, float]:
    """Run one child step; returns (wall seconds, its own peak RSS in MB)."""
    t0 = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bench.pipeline", "--child", what,
                                "--root", str(root), *options], cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"bench: {what} in {root} failed with exit code {process.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def run_one(label: str, scale: int, days: int, interval: int, base: Path) -> Run:
    root = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{label}-", dir=base))
    run = Run(label, scale, days)
    try:
        run.generate_s, _ = spawn("generate", root, "--scale", str(scale), "--days", str(days),
                                  "--interval", str(interval))
        run.spool_mb = sum(p.stat().st_size for p in (root / "spool").rglob("*.parquet")) / 1e6
        _, run.pipeline_rss_mb = spawn("pipeline", root, "--days", str(days))
        result = json.loads((root / "pipeline.json").read_text())
        run.pipeline, run.rows, run.marts = result["times"], result["ledger_rows"], result["marts"]
        _, run.raw_rss_mb = spawn("raw", root, "--marts", str(run.marts or 0))
        raw = json.loads((root / "raw.json").read_text())
        run.raw, run.input_rows = raw["times"], raw["rows"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return run


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x: 1.0 is linear scaling."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True)
              if x > 0 and y > 0 and not math.isnan(y)]
    if len(points) < 2:
        return math.nan
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else math.nan


def fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def machine() -> dict[str, str]:
    import duckdb

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    return {"CPU": cpu, "cores": str(os.cpu_count()), "RAM": f"{mem_kb / 1024**2:.1f} GiB",
            "OS": platform.platform(), "Python": platform.python_version(),
            "DuckDB": duckdb.__version__,
            "load average (1, 5, 15 min) at the start": ", ".join(
                f"{x:.2f}" for x in os.getloadavg())}


def tables(runs: Sequence[Run], scaled: Sequence[Run]) -> list[str]:
    """Markdown tables (they print readably in a terminal too)."""
    out = ["| run | GPUs | days | ledger rows | spool MB | pipeline peak RSS MB "
           "| raw peak RSS MB | marts |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        out.append(f"| {r.label} | {64 * r.scale} | {r.days} | {r.rows:,} | {r.spool_mb:,.0f} "
                   f"| {r.pipeline_rss_mb:,.0f} | {r.raw_rss_mb:,.0f} "
                   f"| {r.marts if r.marts is not None else 'n/a'} |")
    out += ["", "| run | step | pipeline s | raw s | pipeline / raw (x) | pipeline s per M rows "
            "| raw s per M rows |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        for step in STEPS:
            p, w = r.pipeline.get(step, math.nan), r.raw.get(step, math.nan)
            millions = r.rows / 1e6
            out.append(f"| {r.label} | {step} | {fmt(p)} | {fmt(w)} | {fmt(p / w, '.1f')} "
                       f"| {fmt(p / millions)} | {fmt(w / millions)} |")
    if len(scaled) >= 2:
        rows = [r.rows for r in scaled]
        out += ["", "Scaling exponent (slope of log time against log ledger rows over "
                + ", ".join(r.label for r in scaled) + "; 1.0 = linear):", "",
                "| step | pipeline | raw |", "|---|---:|---:|"]
        for step in STEPS:
            out.append(f"| {step} | {fmt(slope(rows, [r.pipeline[step] for r in scaled]))} "
                       f"| {fmt(slope(rows, [r.raw[step] for r in scaled]))} |")
    return out


def write_markdown(path: Path, command: str, runs: Sequence[Run], scaled: Sequence[Run],
                   args: argparse.Namespace, wall_s: float) -> None:
    info = machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python -m bench`); rerun it to refresh this page.",
        "Noisy machines: read the ratios (pipeline / raw DuckDB on the same files in the same",
        "run) more than the seconds.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        f"- measured: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, pipeline bench {wall_s:,.0f} s wall",
        "",
        "## Pipeline against raw DuckDB",
        "",
        f"Command: `{command}`",
        "",
        f"Base size: {args.days} day(s) of the default 64-GPU cluster at {args.interval} s "
        "samples; 4x and 16x copy the cluster (the simulator's `scale`: 4 and 16 x 64 GPUs, "
        "12 tenants per copy). `month` is the demo itself: 30 days of the default cluster.",
        "",
        "```",
        *(__doc__ or "").split("\n\n", 1)[1].splitlines(),
        "```",
        "",
        *tables(runs, scaled),
        "",
        *NOTES.splitlines(),
        "",
    ]
    # What people wrote from profiles (a section headed KEPT) outlives the rerun.
    kept = path.read_text().partition(KEPT)[2] if path.exists() else ""
    path.write_text("\n".join(lines) + "\n" + (KEPT + kept if kept else ""))


def main(argv: Sequence[str] | None = None, *, out: Path | None = None,
         command: str | None = None) -> list[Run]:
    """Run the bench, print its tables; with `out`, write them there as Markdown. Returns the
    runs (bench/targets.py checks them)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scales", default="1,4,16", help="cluster copies, comma-separated")
    parser.add_argument("--days", type=int, default=2, help="days of the base size")
    parser.add_argument("--interval", type=int, default=60, help="sampling interval, s")
    parser.add_argument("--month-days", type=int, default=30,
                        help="days of the demo-cluster month row (0: skip it)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--out", type=Path, default=out, help="also write this Markdown file")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    runs: list[Run] = []
    for scale in (int(s) for s in args.scales.split(",")):
        print(f"pipeline bench: {scale}x ({64 * scale} GPUs, {args.days} days) ...", flush=True)
        runs.append(run_one(f"{scale}x", scale, args.days, args.interval, args.dir))
    scaled = list(runs)
    if args.month_days:
        print(f"pipeline bench: month ({args.month_days} days of 64 GPUs) ...", flush=True)
        runs.append(run_one("month", 1, args.month_days, args.interval, args.dir))
    report = tables(runs, scaled)
    print("\n".join(report), flush=True)
    if args.out:
        shown = command or " ".join([".venv/bin/python -m bench.pipeline",
                                     *(sys.argv[1:] if argv is None else argv)])
        write_markdown(args.out, shown, runs, scaled, args, time.perf_counter() - t0)
    return runs


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
