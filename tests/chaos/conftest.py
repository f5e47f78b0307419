"""The chaos suite's marker and its service fixture (which also ends a Dask cluster a run left)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..conftest import Services
from .harness import kill_keeper_and_workers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: processes killed and frozen while tasks flow (tests/chaos)")


@pytest.fixture
def chaos_services() -> Iterator[Services]:
    """Stops every service a test ran (its supervisor by pid), then any Dask keeper and its workers."""
    manager = Services()
    yield manager
    try:
        manager.stop_all()
    finally:
        for env in manager.envs:
            kill_keeper_and_workers(env)
