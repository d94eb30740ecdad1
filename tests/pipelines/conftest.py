"""A pipeline in a temp folder: the real jobs, checks and schedules of `pipelines.definitions`,
with every resource pointed at tmp paths, over two simulated days of the default cluster."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from collectors.simulate import simulate_to_spool
from models.billing import lifecycle
from models.billing.invoices import export_document
from models.ledger import warehouse
from pipelines.partitions import RANGE_END_TAG, RANGE_START_TAG
from pipelines.resources import (
    BillingConfigResource,
    OutputsResource,
    SpoolResource,
    WarehouseResource,
)

PERIOD = "2026-09"
START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = (date(2026, 9, 1), date(2026, 9, 2))
INTERVAL_S = 300
"""Five-minute samples keep two days of the 64-GPU cluster at ~50k rows: seconds to ingest."""
CLOSE = {"ops": {"invoices": {"config": {"close": True}}}}


@dataclass
class Pipeline:
    home: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def exports(self) -> Path:
        return self.home / "exports" / PERIOD

    def execute(self, job: str, partition_key: str | None,
                run_config: dict[str, Any] | None = None, tags: dict[str, str] | None = None
                ) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition_key, instance=self.instance, run_config=run_config,
            tags=tags, raise_on_error=False)

    def ingest(self, day: date) -> dg.ExecuteInProcessResult:
        return self.execute("daily_usage_job", f"{day}")

    def ingest_range(self, first: date, last: date) -> dg.ExecuteInProcessResult:
        """Days `first`..`last` in one run, as a backfill launches it."""
        return self.execute("daily_usage_job", None, tags={RANGE_START_TAG: f"{first}",
                                                           RANGE_END_TAG: f"{last}"})

    def bill(self, *, close: bool = False) -> dg.ExecuteInProcessResult:
        return self.execute("monthly_billing_job", f"{PERIOD}-01", CLOSE if close else None)

    def run(self, days: Sequence[date] = DAYS, *, close: bool = False) -> None:
        for day in days:
            result = self.ingest(day)
            assert result.success, failure_text(result)
        result = self.bill(close=close)
        assert result.success, failure_text(result)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        con = warehouse.connect(self.warehouse_path, read_only=True)
        try:
            return con.execute(sql, list(params)).fetchall()
        finally:
            con.close()

    def documents(self) -> list[dict[str, Any]]:
        """The period's invoices as finance gets them in JSON."""
        con = warehouse.connect(self.warehouse_path, read_only=True)
        try:
            return [export_document(s) for s in lifecycle.stored(con, PERIOD)]
        finally:
            con.close()

    def export_bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.exports.iterdir()) if p.is_file()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """What failed in a run, for assertion messages: step errors and failed checks."""
    lines = []
    for event in result.all_events:
        error = getattr(getattr(event, "event_specific_data", None), "error", None)
        if error is not None:
            lines.append(error.message.strip())
    lines += [f"check {e.check_name} failed: {dict(e.metadata)}"
              for e in result.get_asset_check_evaluations() if not e.passed]
    return "\n".join(lines) or "no failure recorded"


def assert_blocked_by_conservation(result: dg.ExecuteInProcessResult, device: str) -> None:
    """The run failed on the conservation check, which names `device`, and stopped after the
    ledger: no rollup of the broken day was written."""
    assert not result.success
    (check,) = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "gpu_seconds_conserved"]
    assert not check.passed
    assert device in check.metadata["first_violations"].value
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"gpu_usage_ledger"}


def resources_for(home: Path) -> dict[str, Any]:
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"
    return {
        "warehouse_db": WarehouseResource(path=str(home / "warehouse.duckdb")),
        "spool": SpoolResource(path=str(home / "spool")),
        "billing": BillingConfigResource(rate_card_path=str(demo / "rate-card.yaml"),
                                         tenants_path=str(demo / "tenants.yaml"),
                                         finance_path=str(demo / "finance.yaml")),
        "outputs": OutputsResource(exports_path=str(home / "exports"),
                                   marts_path=str(home / "marts")),
    }


def definitions_for(home: Path) -> dg.Definitions:
    """The project's code location, every resource but the external clients under `home`."""
    from pipelines.definitions import defs

    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs,
        schedules=defs.schedules, sensors=defs.sensors,
        resources={**(defs.resources or {}), **resources_for(home)},
    )


@pytest.fixture(scope="session")
def simulated_spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of the default cluster, simulated once per session (copied per test)."""
    root = tmp_path_factory.mktemp("simulated") / "spool"
    simulate_to_spool(root, START, len(DAYS), interval_s=INTERVAL_S)
    return root


def make_pipeline(home: Path, spool: Path) -> Iterator[Pipeline]:
    shutil.copytree(spool, home / "spool")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Pipeline(home, definitions_for(home), instance)


@pytest.fixture
def pipeline(tmp_path: Path, simulated_spool: Path) -> Iterator[Pipeline]:
    """A fresh warehouse over the simulated spool; nothing ingested yet."""
    yield from make_pipeline(tmp_path / "home", simulated_spool)


@pytest.fixture
def second_pipeline(tmp_path: Path, simulated_spool: Path) -> Iterator[Pipeline]:
    """Another independent warehouse over the same spool, for fresh recomputations."""
    yield from make_pipeline(tmp_path / "second", simulated_spool)


def hours_of(day: date, first_hour: int, count: int, step_s: int = INTERVAL_S
             ) -> list[datetime]:
    """Sample starts every `step_s` seconds over `count` hours of `day` from `first_hour`."""
    begin = datetime(day.year, day.month, day.day, first_hour, tzinfo=UTC)
    return [begin + timedelta(seconds=s) for s in range(0, count * 3600, step_s)]
