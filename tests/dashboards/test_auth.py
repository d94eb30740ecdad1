"""Password hashes, the users file and `chargeback users`."""

import stat

import pytest
from click.testing import CliRunner

from cli.main import main
from dashboards.auth import (
    User,
    UsersFileError,
    authenticate,
    hash_password,
    load_users,
    parse_role,
    save_users,
    user_for_email,
    verify_password,
)


def test_hashes_are_salted_scrypt_and_verify():
    first, second = hash_password("s3cret-passphrase"), hash_password("s3cret-passphrase")
    assert first != second  # random salt
    scheme, n, r, p, _, _ = first.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
    assert verify_password("s3cret-passphrase", first)
    assert not verify_password("s3cret-passphrasf", first)
    assert not verify_password("s3cret-passphrase", "scrypt$1$1$1$bad$bad")
    assert not verify_password("x", "plain-text")


def test_roles():
    assert parse_role("finance").kind == "finance"
    assert parse_role("tenant:a:b'; --").tenant == "a:b'; --"
    for bad in ("tenant:", "admin", "Finance", ""):
        with pytest.raises(ValueError, match="role must be"):
            parse_role(bad)


def test_users_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "users.yaml"
    assert load_users(path) == {}
    users = {"ann": User("ann", parse_role("tenant:acme"), hash_password("pw-pw-pw-pw-pw")),
             "Bob@Example.org": User("Bob@Example.org", parse_role("finance"), None)}
    save_users(path, users)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_users(path) == users
    assert authenticate(users, "ann", "pw-pw-pw-pw-pw") == users["ann"]
    assert authenticate(users, "ann", "wrong") is None
    assert authenticate(users, "nobody", "pw-pw-pw-pw-pw") is None
    assert authenticate(users, "Bob@Example.org", "") is None  # identity provider only
    assert user_for_email(users, "bob@example.org") == users["Bob@Example.org"]
    path.write_text("users:\n  x: {role: boss}\n  y: {role: finance, password: hunter2}\n")
    with pytest.raises(UsersFileError) as error:
        load_users(path)
    assert "users.x.role" in str(error.value)
    assert "users.y.password" in str(error.value)


def test_users_commands(tmp_path):
    path = str(tmp_path / "users.yaml")
    runner = CliRunner()
    result = runner.invoke(main, ["users", "add", "ann", "--role", "tenant:acme",
                                  "--password-stdin", "--users", path],
                           input="a long enough password\n")
    assert result.exit_code == 0, result.output
    assert authenticate(load_users(tmp_path / "users.yaml"), "ann", "a long enough password")
    result = runner.invoke(main, ["users", "add", "cat", "--role", "operator", "--users", path],
                           input="another long password\nanother long password\n")
    assert result.exit_code == 0, result.output
    listed = runner.invoke(main, ["users", "list", "--users", path])
    assert listed.output.splitlines() == ["ann\ttenant:acme\tpassword",
                                          "cat\toperator\tpassword"]
    assert "scrypt" not in listed.output
    bad = runner.invoke(main, ["users", "add", "x", "--role", "root", "--no-password",
                               "--users", path])
    assert bad.exit_code == 2
    assert "role must be" in bad.output
    short = runner.invoke(main, ["users", "add", "x", "--role", "finance", "--password-stdin",
                                 "--users", path], input="short\n")
    assert short.exit_code == 2
    assert "at least 12" in short.output
    assert runner.invoke(main, ["users", "remove", "ann", "--users", path]).exit_code == 0
    missing = runner.invoke(main, ["users", "remove", "ann", "--users", path])
    assert missing.exit_code == 2
    assert "no user 'ann'" in missing.output
    assert list(load_users(tmp_path / "users.yaml")) == ["cat"]


def test_a_changed_users_file_is_read_at_the_next_load(tmp_path):
    # Parsed users are kept per version of the file: a role change (save_users replaces the
    # file) and a removal must both be seen by the next load, a copy each time.
    path = tmp_path / "users.yaml"
    ann = User("ann", parse_role("tenant:acme"), None)
    save_users(path, {"ann": ann})
    first = load_users(path)
    first["mallory"] = ann  # a caller's change does not reach the next load
    assert load_users(path) == {"ann": ann}
    moved = User("ann", parse_role("tenant:zen"), None)
    save_users(path, {"ann": moved})
    assert load_users(path) == {"ann": moved}
    path.unlink()
    assert load_users(path) == {}
