"""Fixtures of the many-hosts tests: one real sshd for the run (see :mod:`tests.multihost.hosts`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from .hosts import Sshd, SshfsShare, Unavailable, mounted_share, running_sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """One sshd for the whole run on 127.0.0.2 and 127.0.0.3, stopped by its pid at the end."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_sshd())
        except Unavailable as exc:
            pytest.skip(str(exc))
        yield server


@pytest.fixture(scope="module")
def sshfs_share(sshd: Sshd) -> Iterator[SshfsShare]:
    """A folder mounted through sshfs from 127.0.0.2 for the module; unmounted at the end, whatever
    happened."""
    with contextlib.ExitStack() as stack:
        try:
            share = stack.enter_context(mounted_share(sshd))
        except Unavailable as exc:
            pytest.skip(str(exc))
        yield share


@pytest.fixture(autouse=True)
def _no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the run's keys: an agent of the machine's user must not log in for a test."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
