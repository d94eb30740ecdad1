import shutil

import pytest

from tests.corpus import corpus


@pytest.fixture(scope="session", autouse=True)
def _remove_demo_home():
    yield
    for home in corpus._DEMO_HOME:
        shutil.rmtree(home.parent, ignore_errors=True)
