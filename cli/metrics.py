"""`chargeback metrics serve`: the budget metrics on an HTTP `/metrics` endpoint for Prometheus.

Each scrape opens the warehouse read-only, renders `models.planning.budgets.metrics_text` (the
renderer of the `budgets.prom` textfile too) and closes it: no lock is held between scrapes, so
the pipeline can write in between. While a pipeline run holds the warehouse, a scrape answers
503 with the reason and Prometheus records the target as down for that scrape."""

from __future__ import annotations

import contextlib
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

import click
import duckdb

from models.errors import ChargebackError, TransientError, UserError
from models.files import home
from models.ledger import warehouse
from models.planning.budgets import metrics_text

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus's text exposition format (prometheus_client.CONTENT_TYPE_PLAIN_0_0_4)."""


def scrape(path: Path) -> bytes:
    con = warehouse.connect(path, read_only=True)
    try:
        return metrics_text(con)
    except duckdb.CatalogException as error:
        # Read-only, the schema cannot be declared here: a DuckDB file that is not a warehouse,
        # or one the pipeline has not opened since budgets were added.
        raise UserError(f"{path} has no budget tables ({str(error).splitlines()[0]}): it is not "
                        "a chargeback warehouse, or the pipeline has not run on it with this "
                        "version; run `chargeback run` (or give --warehouse)") from None
    finally:
        con.close()


class MetricsHandler(BaseHTTPRequestHandler):
    warehouse_path: Path

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"only /metrics is served\n", "text/plain; charset=utf-8")
            return
        try:
            body = scrape(self.warehouse_path)
        except ChargebackError as error:
            # A warehouse being written (TransientError) or not there yet: this scrape fails,
            # the next one may not; never an empty page that reads as "no budgets".
            text = "\n".join(error.problems) + "\n"
            self._answer(503, text.encode(), "text/plain; charset=utf-8")
            return
        self._answer(200, body, CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape would drown the errors


@click.group()
def metrics() -> None:
    """Budget metrics for Prometheus."""


@metrics.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="TCP port (0: any free port, printed on start).")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the metrics to the network.")
@click.option("--warehouse", "warehouse_path", type=click.Path(path_type=Path), default=None,
              help="DuckDB warehouse (default $CHARGEBACK_WAREHOUSE, else "
                   "$CHARGEBACK_HOME/warehouse.duckdb).")
def serve(port: int, bind: str, warehouse_path: Path | None) -> None:
    """Serve the budgets of the latest analysed day on http://BIND:PORT/metrics, read from the
    warehouse at every scrape (read-only)."""
    path = warehouse_path or Path(os.environ.get("CHARGEBACK_WAREHOUSE")
                                  or home() / "warehouse.duckdb")
    if not path.is_file():
        raise UserError(f"no warehouse at {path}: run `chargeback run` or `chargeback demo` "
                        "first (or give --warehouse)")
    # A file that is not a warehouse is refused now, not at the first scrape; one in use by a
    # pipeline run is served anyway (the scrapes say so until the run ends).
    with contextlib.suppress(TransientError):
        scrape(path)
    handler = type("Handler", (MetricsHandler,), {"warehouse_path": path})
    try:
        server = ThreadingHTTPServer((bind, port), handler)
    except OSError as error:
        raise UserError(f"cannot listen on {bind}:{port}: {error.strerror}") from None
    host, bound = server.server_address[:2]
    click.echo(f"serving budget metrics on http://{host!s}:{bound}/metrics from {path}",
               err=True)
    # SIGTERM (what Kubernetes and systemd send) stops it like Ctrl-C. Set explicitly: a
    # process started with SIGTERM ignored (Dagster maps SIGTERM to SIGINT's handler, which a
    # shell's background job has ignored) would otherwise pass the ignore on and never stop.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
