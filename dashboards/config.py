"""Where the dashboard finds its files: environment variables, defaults under CHARGEBACK_HOME
(./var, as the pipeline's resources). `chargeback dashboard` sets them for the app."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("CHARGEBACK_HOME", Path(__file__).resolve().parents[1] / "var"))


def marts_dir() -> Path:
    return Path(os.environ.get("CHARGEBACK_MARTS", home() / "marts"))


def exports_dir() -> Path:
    return Path(os.environ.get("CHARGEBACK_EXPORTS", home() / "exports"))


def users_path() -> Path:
    return Path(os.environ.get("CHARGEBACK_USERS", home() / "users.yaml"))
