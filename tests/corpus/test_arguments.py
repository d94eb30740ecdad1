"""Bad arguments to every command: each refused with the argument named, nothing written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.corpus.corpus import BILL, TENANTS, Case, demo_home, folder, run_case

TODAY = datetime.now(UTC).date()
THIS_MONTH = f"{TODAY:%Y-%m}"
KUBECONFIG = json.dumps({
    "apiVersion": "v1", "kind": "Config", "current-context": "loop",
    "clusters": [{"name": "loop", "cluster": {"server": "http://127.0.0.1:9"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "u"}}],
})
SPOOL = ["--spool", "{w}/spool", "--once"]
PODS = ["collect", "pods", *SPOOL, "--kubeconfig", "{w}/kubeconfig"]
PROMETHEUS = ["collect", "prometheus", *SPOOL, "--url", "http://127.0.0.1:9"]
# A file does not say which GPUs a tier has, so Kueue flavors must be the operator's.
RECS = ["quotas", "write", "--flavors", "existing", "--recommendations", "{w}/recs.csv",
        "--out", "{w}/manifests"]
RECS_HEADER = "tenant,namespace,hardware_tier,mig_profile,recommended_gpus\n"
HELIOS_HEADER = "time,total_gpu_num,running_gpu_num,pending_gpu_num\n"


def bill(option: str, value: str) -> list[str]:
    args = list(BILL)
    args[args.index(option) + 1] = value
    return args


def no_annotations(path: Path) -> None:
    (path / "datasets").mkdir(parents=True)


BILLING = [
    Case("bill-period-9999-12", bill("--period", "9999-12"),
         ["Invalid value for '--period'", "must be a month from 1970-01 to 2199-12"]),
    Case("bill-period-month-13", bill("--period", "2026-13"),
         ["Invalid value for '--period'", "YYYY-MM, got '2026-13'"]),
    Case("bill-period-one-digit-month", bill("--period", "2026-1"),
         ["Invalid value for '--period'", "got '2026-1'"]),
    Case("bill-period-empty", bill("--period", ""), ["Invalid value for '--period'"]),
    Case("bill-period-1969", bill("--period", "1969-12"),
         ["Invalid value for '--period'", "must be a month from 1970-01"]),
    Case("bill-out-is-a-file", bill("--out", "{w}/card.yaml"),
         ["Invalid value for '--out'", "card.yaml' is a file"]),
    Case("bill-out-below-a-file", bill("--out", "{w}/card.yaml/invoices"),
         ["--out {w}/card.yaml/invoices: it, or a folder above it, is a file"]),
    Case("bill-missing-option", BILL[:-2], ["Missing option '--out'"]),
    Case("bill-unknown-option", [*BILL, "--currency", "EUR"], ["No such option '--currency'"]),
]

PIPELINE = [
    Case("run-before-the-first-partition", ["run", "--from", "2025-12-31", "--to", "2026-01-02"],
         ["Invalid value for '--from'", "2025-12-31: the pipeline's days run from 2026-01-01"]),
    Case("run-today", ["run", "--from", "2026-01-01", "--to", f"{TODAY}"],
         ["Invalid value for '--to'", "(the last complete UTC day)"]),
    Case("run-no-such-day", ["run", "--from", "2026-02-30", "--to", "2026-03-01"],
         ["Invalid value for '--from'", "expected a day YYYY-MM-DD, got '2026-02-30'"]),
    Case("run-a-word", ["run", "--from", "yesterday", "--to", "2026-03-01"],
         ["Invalid value for '--from'", "got 'yesterday'"]),
    Case("run-a-time", ["run", "--from", "2026-03-01T00:00", "--to", "2026-03-01"],
         ["Invalid value for '--from'", "got '2026-03-01T00:00'"]),
    Case("run-to-before-from", ["run", "--from", "2026-03-02", "--to", "2026-03-01"],
         ["Invalid value for --to: 2026-03-01 is before --from 2026-03-02"]),
    Case("close-period-9999-12", ["close", "--period", "9999-12"],
         ["Invalid value for '--period'", "must be a month from 1970-01 to 2199-12"]),
    Case("close-before-the-first-partition", ["close", "--period", "2025-12"],
         ["period 2025-12: not a billing month of the pipeline; months run from 2026-01-01"]),
    Case("close-this-month", ["close", "--period", THIS_MONTH],
         [f"period {THIS_MONTH}: not a billing month", "(the last month that has ended)"]),
    Case("invoices-list-bad-period", ["invoices", "list", "--period", "2026-13"],
         ["Invalid value for '--period'"]),
    Case("invoices-list-no-warehouse", ["invoices", "list", "--period", "2026-10"],
         ["no warehouse at {w}/home/warehouse.duckdb"]),
    Case("invoices-list-warehouse-is-a-folder", ["invoices", "list", "--period", "2026-10"],
         ["no warehouse at {w}/home/warehouse.duckdb"], {"home/warehouse.duckdb": folder}),
    Case("invoices-show-unknown-number", ["invoices", "show", "NOPE-1", "--period", "2026-10"],
         ["no invoice NOPE-1 in 2026-10"], {"home": demo_home}),
    Case("invoices-show-without-period", ["invoices", "show", "NOPE-1"],
         ["Missing option '--period'"], {"home": demo_home}),
    Case("invoices-export-out-is-a-file",
         ["invoices", "export", "--period", "2026-10", "--format", "json", "--out",
          "{w}/card.yaml"], ["Invalid value for '--out'", "is a file"], {"home": demo_home}),
    Case("invoices-export-out-below-a-file",
         ["invoices", "export", "--period", "2026-10", "--format", "csv", "--out",
          "{w}/card.yaml/x"], ["--out {w}/card.yaml/x: it, or a folder above it, is a file"],
         {"home": demo_home}),
    Case("invoices-export-unknown-format",
         ["invoices", "export", "--period", "2026-10", "--format", "xml", "--out", "{w}/x"],
         ["Invalid value for '--format'", "'xml' is not one of"]),
    Case("invoices-export-empty-period",
         ["invoices", "export", "--period", "2026-09", "--format", "pdf", "--out", "{w}/x"],
         ["no invoices for 2026-09: nothing to export"], {"home": demo_home}),
    Case("demo-before-the-first-partition", ["demo", "--period", "2025-12"],
         ["period 2025-12: not a billing month"]),
    Case("demo-interval-7", ["demo", "--interval", "7"],
         ["Invalid value for --interval: must divide an hour"]),
    Case("demo-days-0", ["demo", "--days", "0"], ["Invalid value for '--days'"]),
    Case("demo-scale-0", ["demo", "--scale", "0"], ["Invalid value for '--scale'"]),
    Case("demo-period-text", ["demo", "--period", "september"],
         ["Invalid value for '--period'", "got 'september'"]),
]

COLLECTORS = [
    Case("simulate-interval-7", ["collect", "simulate", "--spool", "{w}/spool", "--interval",
                                 "7"], ["Invalid value for --interval: must divide an hour"]),
    Case("simulate-spool-is-a-file", ["collect", "simulate", "--spool", "{w}/card.yaml"],
         ["Invalid value for '--spool'", "card.yaml is a file, not a folder"]),
    Case("simulate-spool-ftp", ["collect", "simulate", "--spool", "ftp://host/x"],
         ["Invalid value for '--spool'", "ftp://host/x"]),
    Case("simulate-days-0", ["collect", "simulate", "--spool", "{w}/spool", "--days", "0"],
         ["Invalid value for '--days'"]),
    Case("simulate-start-month-13", ["collect", "simulate", "--spool", "{w}/spool", "--start",
                                     "2026-13-01"], ["Invalid value for '--start'"]),
    Case("nvml-interval-nan", ["collect", "nvml", *SPOOL, "--interval", "nan"],
         ["Invalid value for '--interval'", "'nan' is not a finite number"]),
    Case("nvml-window-negative", ["collect", "nvml", *SPOOL, "--window", "-1"],
         ["Invalid value for '--window'"]),
    Case("pods-namespace-tenant-without-equals", [*PODS, "--namespace-tenant", "team-a"],
         ["Invalid value for --namespace-tenant: expected NAMESPACE=TENANT, got 'team-a'"],
         {"kubeconfig": KUBECONFIG}),
    Case("pods-namespace-tenant-reserved", [*PODS, "--namespace-tenant", "ns=__idle__"],
         ["Invalid value for --namespace-tenant: 'ns=__idle__'", "reserved"],
         {"kubeconfig": KUBECONFIG}),
    Case("pods-tenants-duplicate-key", [*PODS, "--tenants", "{w}/tenants.yaml"],
         ["Invalid value for --tenants: {w}/tenants.yaml: line 17, column 3: duplicate key 'zen'"],
         {"kubeconfig": KUBECONFIG,
          "tenants.yaml": TENANTS + "  zen:\n    plan: growth\n    start: 2026-01-01\n"}),
    Case("pods-kubeconfig-garbage", PODS, ["kubeconfig"], {"kubeconfig": "::: not yaml {"}),
    Case("pods-kubeconfig-missing", ["collect", "pods", *SPOOL, "--kubeconfig", "{w}/none"],
         ["Invalid value for '--kubeconfig'", "does not exist"]),
    Case("prometheus-interval-0", [*PROMETHEUS, "--interval", "0"],
         ["Invalid value for '--interval'"]),
    Case("prometheus-delay-nan", [*PROMETHEUS, "--delay", "nan"],
         ["Invalid value for '--delay'", "not a finite number"]),
    Case("prometheus-metrics-port-70000", [*PROMETHEUS, "--metrics-port", "70000"],
         ["Invalid value for '--metrics-port'"]),
    Case("prometheus-tenants-invalid-utf8", [*PROMETHEUS, "--tenants", "{w}/tenants.yaml"],
         ["Invalid value for --tenants: {w}/tenants.yaml: line 2, column 3: not valid UTF-8"],
         {"tenants.yaml": b"tenants:\n  \xfe: {}\n"}),
    Case("prometheus-gateway-mapping-bad", [*PROMETHEUS, "--gateway", "{w}/gateway.yaml"],
         ["{w}/gateway.yaml: metrics.latency: unknown measure",
          "{w}/gateway.yaml: namespace_label / namespace: set exactly one"],
         {"gateway.yaml": "name: g\nmodel_label: model\nnamespace_label: ns\nnamespace: x\n"
                          "metrics: {latency: x_sum, input_tokens: a, output_tokens: b}\n"}),
    Case("prometheus-gateway-mapping-missing", [*PROMETHEUS, "--server", "{w}/nowhere.yaml"],
         ["{w}/nowhere.yaml"]),
]

OTHERS = [
    Case("quotas-missing-columns", RECS, ["{w}/recs.csv", "missing column(s) hardware_tier"],
         {"recs.csv": "tenant,namespace\nacme,acme\n"}),
    Case("quotas-negative-gpus", RECS,
         ["{w}/recs.csv", "row 0: recommended_gpus: must not be negative"],
         {"recs.csv": RECS_HEADER + "acme,acme,premium,,-3\n"}),
    Case("quotas-garbage-bytes", RECS, ["{w}/recs.csv", "cannot read as Parquet or CSV"],
         {"recs.csv": b"\x00\x01\x02PAR1\xff"}),
    Case("quotas-no-rows", RECS, ["{w}/recs.csv: no recommendations in the file"],
         {"recs.csv": RECS_HEADER}),
    Case("quotas-out-is-a-file", [*RECS[:-1], "{w}/card.yaml"],
         ["Invalid value for '--out'", "is a file"],
         {"recs.csv": RECS_HEADER + "acme,acme,premium,,2\n"}),
    Case("quotas-apply-kubeconfig-garbage",
         ["quotas", "apply", "--flavors", "existing", "--recommendations", "{w}/recs.csv",
          "--kubeconfig", "{w}/kubeconfig"], ["cannot load Kubernetes credentials"],
         {"recs.csv": RECS_HEADER + "acme,acme,premium,,2\n", "kubeconfig": "[1, 2"}),
    Case("quotas-file-cannot-generate-flavors", [r for r in RECS if r not in ("--flavors",
                                                                              "existing")],
         ["no ResourceFlavor can be generated from it", "--flavors existing"],
         {"recs.csv": RECS_HEADER + "acme,acme,premium,,2\n"}),
    Case("quotas-two-sources", [*RECS, "--from-warehouse", "{w}/recs.csv"],
         ["give exactly one of --recommendations FILE and --from-warehouse DB"],
         {"recs.csv": RECS_HEADER + "acme,acme,premium,,2\n"}),
    Case("quotas-from-warehouse-not-duckdb",
         ["quotas", "write", "--from-warehouse", "{w}/w.duckdb", "--out", "{w}/manifests"],
         ["{w}/w.duckdb: not a DuckDB warehouse file"], {"w.duckdb": b"PAR1 not a database"}),
    Case("quotas-from-warehouse-csv-name",
         ["quotas", "write", "--from-warehouse", "{w}/recs.csv", "--out", "{w}/manifests"],
         ["{w}/recs.csv: not a DuckDB warehouse file"],
         {"recs.csv": RECS_HEADER + "acme,acme,premium,,2\n"}),
    Case("quotas-mig-layout-warehouse-empty-file",
         ["quotas", "mig-layout", "--from-warehouse", "{w}/w.duckdb", "--out", "{w}/mig"],
         ["{w}/w.duckdb: not a DuckDB warehouse file"], {"w.duckdb": b""}),
    Case("users-add-unknown-role", ["users", "add", "bob", "--role", "king", "--no-password",
                                    "--users", "{w}/users.yaml"], ["--role:"]),
    Case("users-add-short-password", ["users", "add", "bob", "--role", "finance",
                                      "--password-stdin", "--users", "{w}/users.yaml"],
         ["the password must have at least 12 characters"], stdin="hunter2\n"),
    Case("users-add-two-password-options",
         ["users", "add", "bob", "--role", "finance", "--password-stdin", "--no-password",
          "--users", "{w}/users.yaml"], ["--password-stdin and --no-password exclude"]),
    Case("users-add-empty-name", ["users", "add", " ", "--role", "finance", "--no-password",
                                  "--users", "{w}/users.yaml"], ["NAME must not be empty"]),
    Case("users-remove-unknown", ["users", "remove", "ghost", "--users", "{w}/users.yaml"],
         ["{w}/users.yaml: no user 'ghost'"], {"users.yaml": "users:\n  a: {role: finance}\n"}),
    Case("eval-shifts-no-annotations", ["eval", "shifts", "--tcpd", "{w}/tcpd"],
         ["{w}/tcpd/annotations.json: cannot read TCPD annotations"], {"tcpd": no_annotations}),
    Case("eval-shifts-garbage-annotations", ["eval", "shifts", "--tcpd", "{w}/tcpd"],
         ["{w}/tcpd/annotations.json: cannot read TCPD annotations"],
         {"tcpd/annotations.json": '["not", "a", "mapping"]'}),
    Case("eval-shifts-penalty-nan", ["eval", "shifts", "--tcpd", "{w}", "--penalty-factor",
                                     "nan"], ["Invalid value for '--penalty-factor'"]),
    Case("eval-reservations-missing-folder", ["eval", "reservations", "--helios", "{w}/none"],
         ["{w}/none is not a folder"]),
    Case("eval-reservations-bad-csv", ["eval", "reservations", "--helios", "{w}/helios"],
         ["{w}/helios/vcA_cluster_sequence_vc.csv", "expected times like"],
         {"helios/vcA_cluster_sequence_vc.csv": HELIOS_HEADER + "yesterday,8,4,0\n"}),
    Case("eval-reservations-price-nan", ["eval", "reservations", "--helios", "{w}",
                                         "--on-demand-price", "NaN"],
         ["Invalid value for '--on-demand-price'"]),
    Case("eval-reservations-half-life-nan", ["eval", "reservations", "--helios", "{w}",
                                             "--half-life-hours", "nan"],
         ["Invalid value for '--half-life-hours'", "not a finite number"]),
    Case("eval-reservations-reserved-above-on-demand",
         ["eval", "reservations", "--helios", "{w}", "--reserved-price", "3.00"],
         ["Invalid value for --reserved-price: reserved price 3.00 is not below on-demand"]),
    Case("replay-no-data-folder",
         ["replay", "helios", "--out", "{w}/replay", "--data", "{w}/nowhere"],
         ["Invalid value for --data: {w}/nowhere: no such folder"]),
    Case("replay-unknown-trace", ["replay", "borg", "--out", "{w}/replay"],
         ["'borg' is not one of 'alibaba-2025'"]),
    Case("replay-bad-trace-row", ["replay", "helios", "--out", "{w}/replay", "--data", "{w}/d"],
         ["{w}/d/helios/earth_vcs/vcA_cluster_sequence_vc.csv: row 3: running_gpu_num 9 "
          "exceeds the VC's quota"],
         {"d/helios/earth_vcs/vcA_cluster_sequence_vc.csv": HELIOS_HEADER
          + "2020-05-01 00:00:00,8,4,0\n2020-05-01 00:01:00,8,9,0\n"}),
]


@pytest.mark.parametrize("case", [c.param() for c in BILLING + PIPELINE + COLLECTORS + OTHERS])
def test_bad_arguments_are_refused(case: Case, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)

