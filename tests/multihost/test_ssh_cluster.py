"""A service on a real Dask SSH cluster: sshd on 127.0.0.2 and 127.0.0.3 (tests/multihost/conftest.py)."""

from __future__ import annotations

import pytest

from .conftest import HOSTS, Sshd


@pytest.mark.parametrize("host", HOSTS)
def test_the_run_sshd_lets_the_run_key_in_on_every_host(sshd: Sshd, host: str) -> None:
    completed = sshd.ssh(host, "echo", "$HOME")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(sshd.session_home)  # a home of the run, not the real one
