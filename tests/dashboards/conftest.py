from pathlib import Path

import pytest

from dashboards.auth import User, hash_password, parse_role, save_users
from tests.dashboards.demo_warehouse import EVIL, build

PASSWORD = "correct horse battery staple"
USERS = {"alice": "tenant:acme", "zed": "tenant:zen", "eve": f"tenant:{EVIL}",
         "fiona": "finance", "oscar": "operator"}
OIDC_FINANCE = "fin@example.com"


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CHARGEBACK_HOME with a built warehouse, published marts and a users file."""
    home = tmp_path_factory.mktemp("home")
    build(home)
    digest = hash_password(PASSWORD)
    users = {name: User(name, parse_role(role), digest) for name, role in USERS.items()}
    users[OIDC_FINANCE] = User(OIDC_FINANCE, parse_role("finance"), None)
    save_users(home / "users.yaml", users)
    return home


@pytest.fixture
def dashboard_env(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CHARGEBACK_MARTS", "CHARGEBACK_EXPORTS", "CHARGEBACK_USERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHARGEBACK_HOME", str(demo_home))
    return demo_home
