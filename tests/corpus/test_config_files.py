"""Bad rate cards, tenants files and users files: each refused with the file and the line or key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus.corpus import (
    BILL,
    CARD,
    TENANTS,
    Case,
    card,
    fill,
    folder,
    invoke,
    make_workspace,
    run_case,
    tenants,
)

C = "{w}/card.yaml: "
T = "{w}/tenants.yaml: "
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
"""A "billion laughs": 9 x 7^9 strings once expanded, from 10 lines."""
PRICE = 'bands:\n          - {up_to: 500, price: "4.00"}'
RESERVED = 'reserved_price: "2.60"'


def price(value: str) -> dict[str, str | bytes]:
    return card(PRICE, f"bands:\n          - {{up_to: 500, price: {value}}}")


P0 = C + "rate_cards[0].tiers.premium.bands[0].price: "
NOT_TEXT = "must be a decimal number written as a string or integer"

RATE_CARDS = [
    # The file itself.
    Case("card-duplicate-key", BILL,
         [C + "line 8, column 5: duplicate key 'currency' (first at line 7)"],
         card("    currency: USD\n", "    currency: USD\n    currency: EUR\n")),
    Case("card-alias", BILL, [C + "line 34, column 12: aliases (*name) are not allowed"],
         card('unknown_size_multiplier: "1.00"',
              'unknown_size_multiplier: &m "1.00"\n    extra: *m')),
    Case("card-billion-laughs", BILL, [C + "line 2", "aliases"], {"card.yaml": BOMB}),
    Case("card-invalid-utf8", BILL, [C + "line 1, column 3: not valid UTF-8 (byte 0xff)"],
         {"card.yaml": b"# \xff\xfe\n" + CARD.encode()}),
    Case("card-latin1-product", BILL, [C + "line 8, column 17: not valid UTF-8 (byte 0xe9)"],
         {"card.yaml": CARD.replace("tiers:", "tiers: # caf\xe9").encode("latin-1")}),
    Case("card-too-large", BILL, [C + "larger than 4,194,304 bytes"],
         {"card.yaml": CARD + "#" * (4 * 1024 * 1024)}),
    Case("card-is-a-folder", BILL, [C + "is a folder, expected a file"], {"card.yaml": folder}),
    Case("card-missing", [*BILL[:4], "{w}/nowhere.yaml", *BILL[5:]],
         ["{w}/nowhere.yaml: file not found"]),
    Case("card-empty", BILL, [C + "(top level): must be a mapping, got NoneType"],
         {"card.yaml": ""}),
    Case("card-a-list", BILL, [C + "(top level): must be a mapping, got list"],
         {"card.yaml": "- premium\n- standard\n"}),
    Case("card-unclosed-bracket", BILL, [C + "line 11, column 9: expected ',' or ']'"],
         card('products: ["H100*", "H200*"]', 'products: ["H100*", "H200*"')),
    Case("card-nul-byte", BILL, [C + "line 1, column 1: character U+0000 is not allowed in YAML"],
         {"card.yaml": "\x00" + CARD}),
    Case("card-tab-indent", BILL, [C + "line 7, column 1: found character '\\t'"],
         card("    currency: USD\n", "\tcurrency: USD\n")),
    Case("card-nested-too-deep", BILL, [C + "nested too deeply"],
         {"card.yaml": "[" * 5000 + "]" * 5000}),
    # Values.
    Case("price-1e999999", BILL, [P0 + "must be at most 1,000,000, got 1E+999999"],
         price('"1e999999"')),
    Case("price-NaN-string", BILL, [P0 + "must be a finite number, got 'NaN'"], price('"NaN"')),
    Case("price-yaml-nan", BILL, [P0 + "must be a decimal number written as a string"],
         price(".nan")),
    Case("price-inf", BILL, [P0 + "must be a finite number, got 'inf'"], price('"inf"')),
    Case("price-negative-infinity", BILL, [P0 + "must be a finite number"],
         price('"-Infinity"')),
    Case("price-negative", BILL, [P0 + "must be at least 0, got -1"], price('"-1"')),
    Case("price-yaml-float", BILL, [P0 + NOT_TEXT + ", got 4.1"],
         price("4.1")),
    Case("price-boolean", BILL, [P0 + NOT_TEXT + ", got True"], price("yes")),
    Case("price-empty", BILL, [P0 + "not a decimal number: ''"], price('""')),
    Case("price-hex", BILL, [P0 + "not a decimal number: '0x10'"], price('"0x10"')),
    Case("price-13-decimals", BILL, [P0 + "at most 12 decimal places"],
         price('"4.0000000000001"')),
    Case("price-huge-integer", BILL, [P0 + "must be at most 1,000,000"],
         price("99999999999999999999999999")),
    Case("price-1000-digits", BILL, [P0 + "not a plausible number"], price("9" * 1000)),
    Case("reserved-price-1e30", BILL,
         [C + "rate_cards[0].tiers.premium.reserved_price: must be at most"],
         card(RESERVED, 'reserved_price: "1e30"')),
    Case("flat-fee-negative", BILL,
         [C + "rate_cards[0].tiers.premium.bands[0].flat_fee: must be at least 0"],
         card(PRICE, 'bands:\n          - {up_to: 500, price: "4.00", flat_fee: "-5"}')),
    Case("discount-120", BILL,
         [C + "rate_cards[0].plans.growth.discount_pct: must be at most 100, got 120"],
         card('discount_pct: "5"', 'discount_pct: "120"')),
    Case("base-fee-1e13", BILL, [C + "rate_cards[0].plans.growth.base_fee: must be at most"],
         card('base_fee: "500.00"', 'base_fee: "1e13"')),
    Case("minimum-nan", BILL, [C + "rate_cards[0].plans.enterprise.minimum: must be a finite"],
         card('minimum: "25000.00"', 'minimum: "nan"')),
    Case("band-up-to-1e999999", BILL,
         [C + "rate_cards[0].tiers.premium.bands[0].up_to: must be at most"],
         card("{up_to: 500,", '{up_to: "1e999999",')),
    Case("band-up-to-decreasing", BILL,
         [C + "rate_cards[0].tiers.premium.bands[1].up_to: must be above the previous"],
         card("{up_to: 5000,", "{up_to: 400,")),
    Case("multiplier-1e9", BILL,
         [C + "rate_cards[0].size_classes[0].multiplier: must be at most 1,000"],
         card('multiplier: "1.00"}', 'multiplier: "1e9"}')),
    Case("unknown-multiplier-negative", BILL,
         [C + "rate_cards[0].unknown_size_multiplier: must be at least 0"],
         card('unknown_size_multiplier: "1.00"', 'unknown_size_multiplier: "-1"')),
    Case("size-bound-1e999", BILL,
         [C + "rate_cards[0].size_classes[0].below_params_b: must be at most 1,000,000"],
         card("below_params_b: 10,", 'below_params_b: "1e999",')),
    Case("usage-range-text", BILL,
         [C + "rate_cards[0].plans.growth.usage_range_gpu_hours[0]: not a decimal"],
         card("usage_range_gpu_hours: [500, 5000]", 'usage_range_gpu_hours: ["many", 5000]')),
    Case("currency-lower-case", BILL, [C + "rate_cards[0].currency: must be an ISO 4217 code"],
         card("currency: USD", "currency: usd")),
    Case("effective-from-9999", BILL,
         [C + "rate_cards[0].effective_from: must lie between 1970-01-01 and 2200-01-01"],
         card("effective_from: 2026-10-01", "effective_from: 9999-12-31")),
    Case("effective-from-not-a-date", BILL,
         [C + "rate_cards[0].effective_from: not an ISO 8601 date"],
         card("effective_from: 2026-10-01", "effective_from: next month")),
    Case("effective-to-before-from", BILL,
         [C + "rate_cards[0].effective_to: must be after effective_from"],
         card("effective_from: 2026-10-01", "effective_from: 2026-10-01\n"
              "    effective_to: 2026-09-01")),
    Case("unknown-key", BILL, [C + "rate_cards[0].discount: unknown key"],
         card("    currency: USD\n", "    currency: USD\n    discount: 5\n")),
    Case("unknown-mode", BILL, [C + "rate_cards[0].tiers.premium.mode: must be one of"],
         card("mode: graduated", "mode: tiered")),
    Case("products-not-a-list", BILL, [C + "rate_cards[0].tiers.premium.products: must list"],
         card('products: ["H100*", "H200*"]', "products: H100")),
    Case("tier-name-integer", BILL, [C + "rate_cards[0].tiers.100: a name must be text"],
         card("      premium:\n", "      100:\n")),
    Case("plan-name-control-character", BILL,
         [C + "rate_cards[0].plans.'gro\\x07wth': a name must not hold control characters"],
         card("      growth:\n", '      "gro\\awth":\n')),
    Case("versions-overlap", BILL, [C + "version 2026-10b: effective range overlaps"],
         {"card.yaml": CARD + CARD.split("rate_cards:\n", 1)[1].replace(
             'version: "2026-10"', 'version: "2026-10b"')}),
    Case("no-card-for-the-period", [*BILL[:8], "2026-09", *BILL[9:]],
         ["no rate card is in effect on 2026-09-01"]),
]

TENANTS_FILES = [
    Case("tenants-duplicate-key", BILL,
         [T + "line 17, column 3: duplicate key 'acme' (first at line 2)"],
         {"tenants.yaml": TENANTS + "  acme:\n    plan: enterprise\n    start: 2026-01-01\n"}),
    Case("tenants-alias", BILL, [T + "line", "aliases"],
         tenants("  zen:\n    plan: enterprise", "  zen:\n    plan: &p enterprise\n"
                 "    display_name: *p")),
    Case("tenants-invalid-utf8", BILL, [T + "line 2, column 3: not valid UTF-8"],
         {"tenants.yaml": b"tenants:\n  \xc3\x28cme:\n    plan: growth\n"}),
    Case("tenants-is-a-folder", BILL, [T + "is a folder"], {"tenants.yaml": folder}),
    Case("tenants-empty", BILL, [T + "tenants: no tenants defined"], {"tenants.yaml": ""}),
    Case("tenant-reserved-name", BILL, [T + "tenants.__idle__: names starting with __"],
         tenants("  zen:\n", "  __idle__:\n")),
    Case("tenant-name-nul", BILL,
         [T + "tenants.'z\\x00en': a name must not hold control characters"],
         tenants("  zen:\n", '  "z\\0en":\n')),
    Case("tenant-name-too-long", BILL,
         [T + "tenants.'zzzzzzzzzzzzzzzzzzzzzzzzzzzzz... (302 characters): a name must be at "
          "most 200 characters, got 300"],
         tenants("  zen:\n", f"  {'z' * 300}:\n")),
    Case("tenant-name-integer", BILL, [T + "tenants.42: a name must be text"],
         tenants("  zen:\n", "  42:\n")),
    Case("tenant-name-empty", BILL, [T + "tenants.'': a name must not be empty"],
         tenants("  zen:\n", '  "":\n')),
    Case("tenant-unknown-plan", BILL, [T + "tenants.zen.plan: unknown plan 'gold'"],
         tenants("plan: enterprise", "plan: gold")),
    Case("tenant-start-9999", BILL, [T + "tenants.zen.start: must lie between"],
         tenants("    sla_class: latency-sensitive\n    start: 2026-01-01",
                 "    sla_class: latency-sensitive\n    start: 9999-01-01")),
    Case("tenant-start-not-a-date", BILL, [T + "tenants.acme.start: not an ISO 8601"],
         tenants("    start: 2026-01-01\n    namespaces: [team-acme]",
                 "    start: soon\n    namespaces: [team-acme]")),
    Case("tenant-end-before-start", BILL, [T + "tenants.zen.end: must be after start"],
         tenants("    namespaces: [team-zen]", "    namespaces: [team-zen]\n"
                 "    end: 2025-01-01")),
    Case("reservation-gpus-1e999999", BILL,
         [T + "tenants.acme.reservations[0].gpus: must be at most"],
         tenants("gpus: 2,", 'gpus: "1e999999",')),
    Case("reservation-gpus-negative", BILL,
         [T + "tenants.acme.reservations[0].gpus: must be at least 0"],
         tenants("gpus: 2,", 'gpus: "-2",')),
    Case("reservation-unknown-tier", BILL,
         [T + "tenants.acme.reservations[0].tier: unknown hardware tier 'platinum'"],
         tenants("tier: premium", "tier: platinum")),
    Case("credit-amount-nan", BILL, [T + "tenants.zen.credits[0].amount: must be a finite"],
         tenants("    namespaces: [team-zen]", "    namespaces: [team-zen]\n"
                 '    credits: [{amount: "NaN", granted: 2026-09-01}]')),
    Case("tenant-unknown-basis", BILL, [T + "tenants.zen.basis: must be one of"],
         tenants("    basis: allocation\n    isolation: silo",
                 "    basis: tokens\n    isolation: silo")),
    Case("namespace-twice", BILL, [T + "tenants.zen.namespaces: 'team-acme' already belongs"],
         tenants("namespaces: [team-zen]", "namespaces: [team-acme]")),
    Case("tenant-unknown-key", BILL, [T + "tenants.zen.colour: unknown key"],
         tenants("    namespaces: [team-zen]", "    namespaces: [team-zen]\n    colour: red")),
    Case("tenant-missing-from-file", BILL,
         ["{w}/usage.parquet: usage of tenants missing from {w}/tenants.yaml: zen"],
         {"tenants.yaml": TENANTS.split("  zen:")[0]}),
    Case("reservation-on-a-tier-without-reserved-price", BILL,
         [C + "tiers.standard.reserved_price: missing, but tenant acme holds"],
         tenants("tier: premium", "tier: standard")),
]

ZEN = "    namespaces: [team-zen]"
# Budgets (docs/budgets.md): checked with the rest of the tenants file.
TENANTS_FILES += [
    Case("budget-float-amount", BILL,
         [T + "tenants.zen.budget.amount: must be a decimal number written as a string"],
         tenants(ZEN, ZEN + "\n    budget: {amount: 14000.5, currency: USD}")),
    Case("budget-other-currency", BILL,
         [T + "tenants.zen.budget.currency: 'EUR' is not the rate cards' currency (USD)"],
         tenants(ZEN, ZEN + '\n    budget: {amount: "14000", currency: EUR}')),
    Case("budget-amount-and-gpu-hours", BILL,
         [T + "tenants.zen.budget: give either `amount` (with `currency`) or `gpu_hours`"],
         tenants(ZEN, ZEN + '\n    budget: {amount: "1", currency: USD, gpu_hours: 5}')),
    Case("budget-threshold-1e999999", BILL,
         [T + "tenants.zen.budget.thresholds.actual[0]: must be at most"],
         tenants(ZEN, ZEN + '\n    budget: {gpu_hours: 5, thresholds: {actual: ["1e999999"]}}')),
    Case("budget-enforce-drain", BILL,
         [T + "tenants.zen.budget.enforce.action: must be one of hold, no-borrowing"],
         tenants(ZEN, ZEN + "\n    budget: {gpu_hours: 5, enforce: {action: drain}}")),
]

USERS = ["users", "list", "--users", "{w}/users.yaml"]
U = "{w}/users.yaml: "
USERS_FILES = [
    Case("users-duplicate-key", USERS, [U + "line 4, column 3: duplicate key 'alice'"],
         {"users.yaml": "users:\n  alice: {role: finance}\n  bob: {role: operator}\n"
                        "  alice: {role: tenant:acme}\n"}),
    Case("users-invalid-utf8", USERS, [U + "line 2, column 3: not valid UTF-8"],
         {"users.yaml": b"users:\n  \xffalice: {role: finance}\n"}),
    Case("users-is-a-folder", USERS, [U + "is a folder"], {"users.yaml": folder}),
    Case("users-bomb", USERS, [U + "line 2", "aliases"], {"users.yaml": BOMB}),
    Case("users-bad-role", USERS, [U + "users.alice.role"],
         {"users.yaml": "users:\n  alice: {role: king}\n"}),
    Case("users-plain-password", USERS, [U + "users.alice.password: not an scrypt hash"],
         {"users.yaml": "users:\n  alice: {role: finance, password: hunter2}\n"}),
    Case("users-add-into-a-broken-file",
         ["users", "add", "carol", "--role", "finance", "--no-password", "--users",
          "{w}/users.yaml"], [U + "line 3, column 3: duplicate key 'bob'"],
         {"users.yaml": "users:\n  bob: {role: finance}\n  bob: {role: operator}\n"}),
    Case("dashboard-with-a-broken-users-file",
         ["dashboard", "--users", "{w}/users.yaml", "--marts", "{w}/marts"],
         [U + "line 1, column 1: not valid UTF-8"], {"users.yaml": b"\x80users: {}\n"}),
]


@pytest.mark.parametrize("case", [c.param() for c in RATE_CARDS + TENANTS_FILES + USERS_FILES])
def test_bad_configuration_is_refused(case: Case, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


def test_the_good_files_are_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The corpus spoils one thing each; unspoiled, the same workspace bills.
    w = make_workspace(tmp_path, {})
    monkeypatch.setenv("CHARGEBACK_HOME", str(w / "home"))
    result = invoke(fill(BILL, w))
    assert result.exit_code == 0, result.output
    assert "10,252.15" in result.output
