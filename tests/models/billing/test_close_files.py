"""The month close's files of a demo day, byte for byte: the FOCUS datasets (CSV, Parquet,
metadata, at a fixed creation time) and the invoices, statement, register and journal. The
close was made faster (one ledger query for every tenant's FOCUS usage, the CSV written column
by column); what it writes must not change by a byte.

EXPECTED holds the sha256 of each file as main wrote them before those changes (commit
f038b5f); a deliberate change of a file's format changes its hash here, reviewed with it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from models.billing import lifecycle
from models.billing.books import load_books
from models.billing.exports import write_invoice_files, write_period_files
from models.billing.focus import provider_of
from models.billing.focus_datasets import write_focus_export
from models.billing.invoices import Parties
from models.billing.period import price_period
from models.billing.rate_cards import load_rate_cards, load_tenants, month_bounds
from models.ledger import warehouse
from tests.demo_day import DEMO, START, load_demo_day

PERIOD = "2026-09"
CLOSED = datetime(2026, 10, 1, 6, tzinfo=UTC)


def close_demo_day(tmp: Path) -> dict[str, str]:
    """Bill and close the demo day's month and write every file of the close; their hashes."""
    cards = load_rate_cards(DEMO / "rate-card.yaml")
    tenants = load_tenants(DEMO / "tenants.yaml", cards)
    books = load_books(DEMO / "finance.yaml", cards)
    parties = {name: Parties(books.issuer, t.billing) for name, t in tenants.items()
               if t.billing is not None}
    con = warehouse.connect(load_demo_day(tmp / "warehouse.duckdb"))
    try:
        _, end = month_bounds(PERIOD)
        invoices = price_period(con, cards[0], tenants, PERIOD,
                                credit_available=lambda t: t.credit_granted_before(end))
        lifecycle.write_drafts(con, PERIOD, invoices, "inputs", CLOSED, parties=parties)
        lifecycle.close_period(con, PERIOD, CLOSED)
        folder = tmp / "exports"
        documents = lifecycle.period_documents(con, PERIOD)
        written = write_invoice_files(documents, folder)
        written += write_period_files(documents, PERIOD, folder, books.accounts)
        written += write_focus_export(con, PERIOD, folder, tenants=tenants, cards=cards,
                                      provider=provider_of(books), created=CLOSED)
    finally:
        con.close()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(written)}


EXPECTED = {
    "INV-2026-09-0001.csv":
        "ac799abae14ebd00b26ec32b2d0bd67d96e9fa8f3013015c03523311deb67a47",
    "INV-2026-09-0001.json":
        "c69c261175fae209678f2f048cffc5d9f990dcbffd81da24d14d557a550bc15b",
    "INV-2026-09-0001.pdf":
        "210d46d3627aca4a7b3e727fc7a70fc999d66c580718e1efd763e643f819ca6b",
    "INV-2026-09-0002.csv":
        "fab09f8c160abb9010a5fe1bb65b134e9c3cb04173f73c2e9acf71d545e4c922",
    "INV-2026-09-0002.json":
        "f2ad68f819039841bc3688e3fd064f51799c4dd7a775e1456e2a9fe516149200",
    "INV-2026-09-0002.pdf":
        "476453566bdd08faee6523569f332226cbeeb9dbe0b1b28bd0d7b1776bd27116",
    "INV-2026-09-0003.csv":
        "89e77cdc79072d3fcbdd2b5c1c68167ddb8087ed650cbdbe0d63e719a3fcff27",
    "INV-2026-09-0003.json":
        "deb54d2248254296ce0bba97ad7b967c724fb3190b8d376b87e3087908b3c97d",
    "INV-2026-09-0003.pdf":
        "33de7d59b563c43f3248760eb2d558c12c8b27977b087417b2b77de5b07a7d2a",
    "INV-2026-09-0004.csv":
        "3449d95c98e70d5a2c0a4f65d065c672dd1c9219a0baac75cc75f316921d92dc",
    "INV-2026-09-0004.json":
        "d710fdea159a250ad9e9d9a9b95e7c808b83156b1173603da9cc3b68ee5a5f18",
    "INV-2026-09-0004.pdf":
        "a76e6c58aebbbabca90c8a0605f07014bf7991192f231ea37b827a5c997b1f50",
    "INV-2026-09-0005.csv":
        "4ff40d94cc94dfa1db11ea52486a2088a329ec93b91becf2e1908c8a17c3ac4d",
    "INV-2026-09-0005.json":
        "fb715e6ba2edd0bbcc2d51939dd73ae44ec7013b9917a486e27cdeb28ba0a2f3",
    "INV-2026-09-0005.pdf":
        "7a95f2ed1b61968b34df3fde21a8a0f434ad770db1633414e333965999c4a6ec",
    "INV-2026-09-0006.csv":
        "ed1e1a0588afccdc12d398a693123f6f8d661e6d827d5adbb853ad01dbd08a18",
    "INV-2026-09-0006.json":
        "0e5da1e87de2ba7d0843f75217984b532e0add7b4c22780b9b7d6148b52995cf",
    "INV-2026-09-0006.pdf":
        "ef5d590a4fa6b8f03924c7265a555459fc212b9611b19fe1ccc7dd019a3b1b88",
    "INV-2026-09-0007.csv":
        "052de4a052685d633eda26c7f79ee2fed066300bcc4b1b576eaff1d8fad8a51c",
    "INV-2026-09-0007.json":
        "f175301469234d43628d55db4ae5323ec787362bf71d99644c6d4cc60187f3fe",
    "INV-2026-09-0007.pdf":
        "346272b8c362e9486fac96f8b84491d97482257428e8d28ab2bd355fa7e29a76",
    "INV-2026-09-0008.csv":
        "1a88f84bfbc44708eb80fe70bca4b65326cdbd1d4a1d190946c81bbe0998627f",
    "INV-2026-09-0008.json":
        "2db1110b4632ab0fef9bfde9f33e81a4bdc380fa77825aebdd8f7e210aad261b",
    "INV-2026-09-0008.pdf":
        "91fd85589c4ad32c9008693838672d459d76694fe87fedae2bb843c2f1736363",
    "INV-2026-09-0009.csv":
        "2f6ea0d1f4d28a8d2111f01e7213fd647f0c51e31d38437180ba197d9ff0d3a8",
    "INV-2026-09-0009.json":
        "d4f8a55b41480bc746f649bbe6e5b397bd1251bee7626754dd5b39bc1a073dc1",
    "INV-2026-09-0009.pdf":
        "3a6945cb07560557fffcd8c6a178899df4359d2d292b650e8bf62b95b8b3d263",
    "INV-2026-09-0010.csv":
        "1a155a03b991f01ae9ce312bfd84a91f56442df1ff1aeed973670ed393fec111",
    "INV-2026-09-0010.json":
        "0dd40554673c6e3e4a28ad12768c578a75c382d61dfcdd472375a7f63f26ea6e",
    "INV-2026-09-0010.pdf":
        "bbc8cf1e0bbf84a72e65d32c87ba7c6ca509cecee7e1f0f8b692430e585dc00f",
    "INV-2026-09-0011.csv":
        "cfd2e3a1eb33f53d29f47146483a5e1744058213a1650501e2a593d814aeab23",
    "INV-2026-09-0011.json":
        "10fc5dff740538e1b105df0e40c912bf98216756cbd57d99495c30a4bda68cf5",
    "INV-2026-09-0011.pdf":
        "7c5387fb6df543b3cabc469758dd0487894f6945b70edf44d9274aa288f23846",
    "STATEMENT-2026-09-lumen.csv":
        "66b3a4aa7a78bf932b5731ae699b51d8833301793bb951845ed358e92b499507",
    "STATEMENT-2026-09-lumen.json":
        "d50c89d6f1c1fb89723f464d8033bf32a6f1a767ba70ab30229daedfa9efc6ec",
    "STATEMENT-2026-09-lumen.pdf":
        "51c4952e92b203d541af03ea315c6007a10d875a7f9323469da8030a7c7bc0e4",
    "focus-billing-period.csv":
        "3a299731750aa291a0446bf8840ee2cb65adb06a4cb55afa93c5e223803262cb",
    "focus-billing-period.metadata.json":
        "d77ba325c02473b7982fb04f03ce74ca8adcc4e2f7f7a95e08d1a448e5017d2e",
    "focus-billing-period.parquet":
        "a8bbe4cef0d87e1dd7a38ee45f755cd29b7ffdc3f93d4862d4887180ddaad7bf",
    "focus-contract-commitment.csv":
        "c7acd830a1473875e15add7cf4035052bb87724f16816888d799b7b4343ee64c",
    "focus-contract-commitment.metadata.json":
        "6c47b95f2ccc4e060fcc90c00fe8bcc7f0448bad8b00759be251f46312d19287",
    "focus-contract-commitment.parquet":
        "8ebbf189888f01043e2bd30ab7b5ff14a1717a0eac5ba40c1a55facc31bc5083",
    "focus-invoice-detail.csv":
        "d2d79257d67c35c5f20ba5438dd8fc1951d19cc0d38e2d97ef9eedd353aea9a3",
    "focus-invoice-detail.metadata.json":
        "31fed022833f119c7b5270d5f5b119f9aedd629e34a172d0fc0a3ad81aa2db24",
    "focus-invoice-detail.parquet":
        "45ccc48c32d187fc7641d496eee9a7cedce8475678779e243198e718a0ba202b",
    "focus.csv":
        "1bfe3cc6330ba183653e32d65e23a3b273d6afb44d1667b04a81ee86f2bc5bd7",
    "focus.metadata.json":
        "3baccbba26af973918cee320b9b693607d9bdecee03a25c3be20996fc0b6397f",
    "focus.parquet":
        "7e3a64fb5b3d9958cc2f75533d1bcbd6fba1a4d0a8726b9e340f546396b323f0",
    "journal-2026-09.csv":
        "488755b649401004d938f39d0a8677c0aa604739c12746fe1084e02b96fd5432",
    "register-2026-09.csv":
        "eb3e66e92c0cd02bced5e97afd78698362f312e3f7eed8f8be584815a9f38bc2",
}


def test_the_close_writes_main_s_bytes(tmp_path: Path) -> None:
    assert START.strftime("%Y-%m") == PERIOD
    assert close_demo_day(tmp_path) == EXPECTED
