"""Hosts over SSH (``[cluster.hosts]``): how keepwarm connects to them, and the check of every host.

asyncssh, which Dask's SSH cluster uses, reads an OpenSSH client config: ``~/.ssh/config`` unless
``[cluster] ssh_config`` names another (its Port, User, IdentityFile, UserKnownHostsFile, ConnectTimeout
…), so ``ssh -F <that file> <host> true`` checks by hand what keepwarm will do. Before a cluster starts,
every host is asked to import keepwarm and distributed with the Python the workers will run: a host
that is unreachable, refuses the key, has no such Python or lacks keepwarm fails ``start`` by name,
before any process runs anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepwarm.errors import ClusterError

if TYPE_CHECKING:
    from keepwarm.env import Env

PROBE = "import keepwarm, distributed"
NOT_FOUND_EXIT = 127  # the shell's "command not found"


def ssh_connect_options(env: Env, timeout: float) -> dict[str, Any]:
    """asyncssh.connect's options: ``[cluster] ssh_config`` (relative to the app folder) if set."""
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # not every SSH hop in the supervisor's log
    options: dict[str, Any] = {"connect_timeout": timeout}
    configured = env.settings.cluster.ssh_config
    if configured:
        path = (env.app_dir / Path(configured).expanduser()).resolve()
        if not path.is_file():
            raise ClusterError(
                f"[cluster] ssh_config is {configured}, but {path} is not a file: "
                "point it at an OpenSSH client config (the file `ssh -F` reads), "
                "or remove it to use ~/.ssh/config"
            )
        options["config"] = [str(path)]
    return options


def tethered(python: str) -> str:
    """The "Python" Dask's SSH cluster runs its scheduler and workers with on every host: ``python``
    behind keepwarm.backends.ssh_tether, so that they end with the SSH session that started them."""
    return f"{shlex.quote(python)} -m keepwarm.backends.ssh_tether {shlex.quote(python)}"


def check_ssh_hosts(hosts: list[str], connect: dict[str, Any], python: str, timeout: float) -> None:
    """Raise ClusterError naming every host that cannot run a keepwarm worker, and what to do."""
    problems = asyncio.run(_check_all(hosts, connect, python, timeout))
    found = [problem for problem in problems if problem]
    if found:
        raise ClusterError("\n".join(found))


async def _check_all(hosts: list[str], connect: dict[str, Any], python: str, timeout: float) -> list[str]:
    return list(await asyncio.gather(*(_check_host(host, connect, python, timeout) for host in hosts)))


async def _check_host(host: str, connect: dict[str, Any], python: str, timeout: float) -> str:
    """What is wrong with ``host`` ("" when nothing is)."""
    import asyncssh

    try:
        result = await asyncio.wait_for(_probe(host, connect, python), timeout)
    except asyncssh.PermissionDenied:
        return (
            f"host {host} refused this machine's SSH key: add its public key to the host's "
            "authorized_keys, or name the right key (IdentityFile) in [cluster] ssh_config"
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        return (
            f"host {host}'s SSH host key is not trusted ({exc.reason}): add it to known_hosts "
            "(connect once with `ssh HOST`), or name the file (UserKnownHostsFile) in [cluster] ssh_config"
        )
    except TimeoutError:  # before OSError, its base class
        return f"host {host} did not answer over SSH within {timeout:g}s: check that it is up and reachable"
    except (OSError, asyncssh.Error) as exc:
        return (
            f"cannot reach host {host} over SSH: {exc or type(exc).__name__}. Check that sshd runs there "
            "and the host's name, port and user ([cluster.hosts], [cluster] ssh_config)"
        )
    if result.exit_status == 0:
        return ""
    said = str(result.stderr or "").strip().splitlines()
    if result.exit_status == NOT_FOUND_EXIT:
        return (
            f"Python is missing on host {host}: {python} was not found there. Install keepwarm['dask'] "
            "there at that path, or set [cluster] remote_python to the Python that has it"
        )
    return (
        f"keepwarm or distributed is missing on host {host}: {python} said "
        f"{said[-1] if said else f'exit {result.exit_status}'}. "
        "Install keepwarm['dask'] for that Python, or set [cluster] remote_python to one that has it"
    )


async def _probe(host: str, connect: dict[str, Any], python: str) -> Any:
    import asyncssh

    async with asyncssh.connect(host, **connect) as connection:
        return await connection.run(f"{shlex.quote(python)} -c {shlex.quote(PROBE)}", check=False)
