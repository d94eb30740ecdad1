"""Dagster resources: where the warehouse, spool, configuration and outputs live.

Every field defaults from an environment variable with a working local default, so
`dagster dev` runs with no configuration (a DuckDB file and a spool under ./var)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb

from models.billing.books import Books, load_books
from models.billing.invoices import Parties
from models.billing.rate_cards import RateCard, Tenant, load_rate_cards, load_tenants, rate_card_for
from models.files import home
from models.ledger import warehouse
from pipelines.run_workers import record_worker

ROOT = Path(__file__).resolve().parents[1]


def _env(name: str, default: Path) -> str:
    return os.environ.get(name, str(default))


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file that only Dagster writes."""

    path: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # The run process that opens the warehouse holds the queue's one writer place: it
        # records itself on its run, so that a killed one can be found and failed.
        if context.instance is None or context.dagster_run is None:
            return
        if not record_worker(context.instance, context.dagster_run.run_id) and context.log:
            context.log.warning("this run's process cannot be identified (no /proc): if it is "
                                "killed, only the jobs' maximum runtime will fail the run")

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = warehouse.connect(self.path)
        try:
            warehouse.create_schema(con)
            yield con
        finally:
            con.close()


class SpoolResource(dg.ConfigurableResource):
    """The collectors' spool of Hive-partitioned Parquet files (collectors/spool.py)."""

    path: str
    """A local folder, `file:///folder`, or `s3://bucket/prefix` (credentials, region and
    endpoint from the AWS_* variables, or `?endpoint_override=host:port&scheme=http` for an
    S3-compatible store): CHARGEBACK_SPOOL."""


class BillingConfigResource(dg.ConfigurableResource):
    """The rate-card, tenants and finance YAML files."""

    rate_card_path: str
    tenants_path: str
    finance_path: str = ""
    """The issuer block and ledger accounts (models/billing/books.py); empty: none configured,
    so documents carry no issuer and no journal is written (CHARGEBACK_FINANCE)."""

    def rate_cards(self) -> list[RateCard]:
        return load_rate_cards(Path(self.rate_card_path))

    def rate_card(self, day: date) -> RateCard:
        return rate_card_for(self.rate_cards(), day)

    def tenants(self) -> dict[str, Tenant]:
        return load_tenants(Path(self.tenants_path), self.rate_cards())

    def books(self) -> Books | None:
        return load_books(Path(self.finance_path), self.rate_cards()) if self.finance_path else None

    def parties(self) -> dict[str, Parties]:
        """Issuer and bill-to blocks of every tenant with a `billing:` block, for its
        documents; none without a finance file (there is no issuer to name)."""
        books = self.books()
        if books is None:
            return {}
        return {name: Parties(books.issuer, tenant.billing)
                for name, tenant in self.tenants().items() if tenant.billing is not None}

    def digest(self) -> str:
        return "".join(Path(p).read_text() for p in (self.rate_card_path, self.tenants_path,
                                                      self.finance_path) if p)


class OutputsResource(dg.ConfigurableResource):
    """Where exports (PDF, CSV, JSON, FOCUS) and the published tenant marts go."""

    exports_path: str
    marts_path: str


class PrometheusResource(dg.ConfigurableResource):
    """The Prometheus that scrapes dcgm-exporter and the inference gateway."""

    url: str


class KubernetesResource(dg.ConfigurableResource):
    """The cluster that receives quota recommendations; empty kubeconfig = in-cluster."""

    kubeconfig: str
    apply: bool


class AlertmanagerResource(dg.ConfigurableResource):
    """The Prometheus Alertmanager that receives budget alerts (v2 API); empty: none."""

    url: str


def default_resources() -> dict[str, dg.ConfigurableResource]:
    base = home()
    demo = ROOT / "examples" / "demo"
    return {
        "warehouse_db": WarehouseResource(path=_env("CHARGEBACK_WAREHOUSE",
                                                 base / "warehouse.duckdb")),
        "spool": SpoolResource(path=_env("CHARGEBACK_SPOOL", base / "spool")),
        "billing": BillingConfigResource(
            rate_card_path=_env("CHARGEBACK_RATE_CARD", demo / "rate-card.yaml"),
            tenants_path=_env("CHARGEBACK_TENANTS", demo / "tenants.yaml"),
            finance_path=_env("CHARGEBACK_FINANCE", demo / "finance.yaml"),
        ),
        "outputs": OutputsResource(
            exports_path=_env("CHARGEBACK_EXPORTS", base / "exports"),
            marts_path=_env("CHARGEBACK_MARTS", base / "marts"),
        ),
        "prometheus": PrometheusResource(url=os.environ.get("CHARGEBACK_PROMETHEUS_URL",
                                                            "http://127.0.0.1:9090")),
        "alertmanager": AlertmanagerResource(url=os.environ.get("CHARGEBACK_ALERTMANAGER_URL",
                                                                "")),
        "kubernetes": KubernetesResource(
            kubeconfig=os.environ.get("CHARGEBACK_KUBECONFIG", ""),
            apply=os.environ.get("CHARGEBACK_QUOTAS_APPLY", "") == "1",
        ),
    }
