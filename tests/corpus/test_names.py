"""Names that become paths (issue 11, class 2): a tenant called `../../escaped` or `team/a`
is billed like any other, and its invoice lands inside --out under a name of its own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.files import safe_name
from tests.corpus.corpus import (
    BILL,
    ROWS,
    TENANTS,
    Case,
    fill,
    folder,
    invoke,
    make_workspace,
    parquet,
    run_case,
    snapshot,
)

NAMES = ["../../escaped", "team/a", "/etc/passwd", "..", "CON", "租户-\u03b1", "x" * 200,
         "zen.json", "acme-0123456789abcdef"]


def renamed(name: str) -> dict[str, str | bytes]:
    """The design example with tenant zen renamed `name`, in the tenants file and the rows."""
    quoted = json.dumps(name)  # a YAML double-quoted scalar
    return {"tenants.yaml": TENANTS.replace("  zen:\n", f"  {quoted}:\n"),
            "usage.parquet": parquet([{**r, "tenant": name if r["tenant"] == "zen" else
                                       r["tenant"]} for r in ROWS])}


@pytest.mark.parametrize("name", NAMES)
def test_a_tenant_name_never_leaves_out(name: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_workspace(tmp_path, renamed(name))
    monkeypatch.setenv("CHARGEBACK_HOME", str(w / "home"))
    before = snapshot(tmp_path)
    result = invoke(fill(BILL, w))
    assert result.exit_code == 0, result.output
    added = sorted(set(snapshot(tmp_path)) - set(before))
    assert all(p == "w/out" or p.startswith("w/out/") for p in added), added
    out = w / "out"
    docs = {json.loads(p.read_text())["tenant"]: p.name for p in out.glob("*.json")}
    assert docs == {"acme": "acme.json", name: f"{safe_name(name)}.json"}
    assert len(set(docs.values())) == 2
    with (out / "invoices.csv").open(newline="") as handle:
        tenants = {row["tenant"] for row in csv.DictReader(handle)}
    assert tenants == {"acme", name}
    # zen's figures, whatever it is called: DESIGN.md's 25,000.00.
    assert json.loads((out / docs[name]).read_text())["total"] == "25000.00"
    if docs[name] != f"{name}.json":
        assert f"({docs[name]})" in result.output


def test_hashed_file_names_cannot_be_claimed_by_another_tenant() -> None:
    # "team/a" becomes "team-a-<16 hex>"; a tenant literally called that gets its own hash.
    taken = safe_name("team/a")
    assert safe_name(taken) != taken
    assert len({safe_name(n) for n in NAMES}) == len(NAMES)


@pytest.mark.parametrize("case", [c.param() for c in [
    Case("tenant-name-with-nul", BILL, ["{w}/tenants.yaml: tenants.'z\\x00en': a name must "
                                        "not hold control characters"], renamed("z\0en")),
    Case("tenant-name-201-characters", BILL, ["a name must be at most 200 characters, got 201"],
         renamed("y" * 201)),
    Case("tenant-name-newline", BILL, ["a name must not hold control characters"],
         renamed("team\nb")),
    Case("invoice-file-name-taken-by-a-folder", BILL,
         ["{w}/out/zen.json: is a folder where an invoice file goes"],
         {"out/zen.json": folder, "out/keep.txt": "someone's file"}),
]])
def test_names_that_cannot_be_used_are_refused(case: Case, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


def test_rerun_replaces_invoices_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    # Written atomically: the second run leaves no temporary files and identical bytes.
    w = make_workspace(tmp_path, renamed("team/a"))
    monkeypatch.setenv("CHARGEBACK_HOME", str(w / "home"))
    assert invoke(fill(BILL, w)).exit_code == 0
    first = snapshot(w / "out")
    assert invoke(fill(BILL, w)).exit_code == 0
    assert snapshot(w / "out") == first
    assert not [p for p in first if Path(p).name.startswith(".tmp")]
