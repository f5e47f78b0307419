"""Many "hosts" on this one machine: a real OpenSSH ``sshd`` listening on 127.0.0.2, 127.0.0.3, ….

Each loopback address is a host: Dask's SSH cluster (asyncssh) and ``ssh`` reach it through the sshd a
fixture starts with keys made for the run. Nothing touches the real ``~/.ssh``: the client side reads
the run's own config file (``ssh -F``, ``[cluster] ssh_config``), and every SSH session gets a home and a
log dir of the run (sshd's ``SetEnv``), as a separate machine would have its own. ``host_env`` adds
variables to one host's sessions only (``Match LocalAddress``), e.g. a clock under faketime.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
HOSTS = ("127.0.0.2", "127.0.0.3")
START_TIMEOUT_SEC = 10.0
SESSION_MARKER = "KEEPWARM_TEST_SSHD"  # in every SSH session's environment: the sshd's folder


class Unavailable(RuntimeError):
    """What this machine lacks for a real sshd or sshfs mount (the tests skip, the benches stop)."""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> str:
    """A new passphrase-less ed25519 key at ``path``; its public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    """A running sshd on ``hosts`` (one port), its client config and the keys of the run."""

    root: Path
    hosts: tuple[str, ...]
    port: int
    process: subprocess.Popen[bytes]
    client_config: Path  # an OpenSSH client config: `ssh -F client_config HOST` and [cluster] ssh_config
    client_key: Path
    known_hosts: Path
    session_home: Path  # HOME of every SSH session
    session_logs: Path  # KEEPWARM_LOG_DIR of every SSH session

    def ssh(self, host: str, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` through the real ssh client (BatchMode: never prompts)."""
        return subprocess.run(
            ["ssh", "-F", str(self.client_config), "-o", "BatchMode=yes", host, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def client_config_for(
        self, name: str, identity: Path | None = None, known_hosts: Path | None = None
    ) -> Path:
        """Another client config of these hosts: another key, or another known_hosts file."""
        path = self.root / name
        write_client_config(
            path, self.hosts, self.port, identity or self.client_key, known_hosts or self.known_hosts
        )
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def ssh_missing() -> str | None:
    """Why a real sshd cannot run here, or None."""
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/install-multihost.sh as root (Debian's openssh-client)"
    if not SSHD.exists():
        return f"{SSHD} is missing: run scripts/install-multihost.sh as root (Debian's openssh-server)"
    return None


def start_sshd(
    root: Path,
    hosts: tuple[str, ...] = HOSTS,
    host_env: Mapping[str, Mapping[str, str]] | None = None,
    host_config: Mapping[str, str] | None = None,
) -> Sshd:
    """Start sshd on ``hosts`` with keys made in ``root``; ``host_env`` adds variables per host, and
    ``host_config`` sshd_config lines (e.g. a ForceCommand) per host."""
    reason = ssh_missing()
    if reason:
        raise Unavailable(reason)
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    except OSError as exc:
        raise Unavailable(f"sshd needs /run/sshd and it cannot be created here: {exc}") from exc
    root.mkdir(parents=True, exist_ok=True)
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    host_public = keygen(host_key)
    (root / "authorized_keys").write_text(keygen(client_key) + "\n")
    home, logs = root / "home", root / "logs"
    home.mkdir(exist_ok=True)
    port = free_port()
    session_env = f"SetEnv HOME={home} KEEPWARM_LOG_DIR={logs} {SESSION_MARKER}={root}"
    per_host = [
        f"Match LocalAddress {host}\n    {session_env} "
        + " ".join(f"{key}={value}" for key, value in (host_env or {}).get(host, {}).items())
        + (f"\n    {(host_config or {})[host]}" if host in (host_config or {}) else "")
        for host in {**(host_env or {}), **(host_config or {})}
    ]
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                *(f"ListenAddress {host}" for host in hosts),
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "LogLevel ERROR",
                session_env,
                *per_host,
                "",
            ]
        )
    )
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(f"[{host}]:{port} {host_public}\n" for host in hosts))
    client_config = root / "ssh_config"
    write_client_config(client_config, hosts, port, client_key, known_hosts)
    with open(root / "sshd.log", "ab") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    sshd = Sshd(root, hosts, port, process, client_config, client_key, known_hosts, home, logs)
    deadline = time.monotonic() + START_TIMEOUT_SEC
    while not all(_listening(host, port) for host in hosts):
        if process.poll() is not None or time.monotonic() > deadline:
            sshd.stop()
            log = (root / "sshd.log").read_text()
            raise RuntimeError(f"sshd did not listen on {hosts} port {port}: {log}")
        time.sleep(0.02)
    return sshd


def write_client_config(
    path: Path, hosts: tuple[str, ...], port: int, identity: Path, known_hosts: Path
) -> None:
    """An OpenSSH client config for ``hosts``, read by ssh (-F) and by asyncssh ([cluster] ssh_config)."""
    path.write_text(
        f"Host {' '.join(hosts)}\n"
        f"    Port {port}\n"
        f"    User {getpass.getuser()}\n"
        f"    IdentityFile {identity}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        "    StrictHostKeyChecking yes\n"
        "    ConnectTimeout 5\n"
    )


def session_processes(sshd: Sshd) -> set[int]:
    """Every live process an SSH session of ``sshd`` started, wherever it was re-parented since: they
    all carry the sshd's marker variable (SetEnv) in their environment."""
    marker = f"{SESSION_MARKER}={sshd.root}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and not _zombie(entry):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _zombie(entry: Path) -> bool:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------ sshfs

SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")  # run as a command: the test sshd has no Subsystem
# A queue needs every stat and listing fresh: no sshfs directory cache, no FUSE attribute, entry or
# negative caching; BatchMode so that a refused key fails the mount instead of prompting.
MOUNT_OPTIONS = (
    f"dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0,BatchMode=yes,sftp_server={SFTP_SERVER}"
)


@dataclass
class SshfsShare:
    folder: Path  # the share itself, as its server sees it
    mount: Path  # the same share through sshfs


def sshfs_missing() -> str | None:
    """Why an sshfs mount cannot be made here, or None."""
    for tool in ("sshfs", "fusermount3"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/install-multihost.sh as root (Debian's sshfs and fuse3)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: this machine (container) gives no FUSE device"
    if not SFTP_SERVER.exists():
        return f"{SFTP_SERVER} is missing: install Debian's openssh-server (scripts/install-multihost.sh)"
    return None


@contextlib.contextmanager
def mounted_share(sshd: Sshd, options: str = MOUNT_OPTIONS) -> Iterator[SshfsShare]:
    """A new folder mounted through sshfs from the sshd's first host; unmounted at the end, whatever
    happened (lazily if still busy: it goes when its last user does)."""
    reason = sshfs_missing()
    if reason:
        raise Unavailable(reason)
    root = Path(tempfile.mkdtemp(prefix="keepwarm-sshfs-"))
    share = SshfsShare(root / "share", root / "mount")
    share.folder.mkdir()
    share.mount.mkdir()
    source = f"{sshd.hosts[0]}:{share.folder}"
    command = ["sshfs", "-F", str(sshd.client_config), source, str(share.mount), "-o", options]
    mounted = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    try:
        if mounted.returncode != 0:
            raise RuntimeError(f"sshfs failed: {mounted.stderr}")
        yield share
    finally:
        unmount(share.mount)
        shutil.rmtree(root, ignore_errors=True)


def unmount(mount: Path) -> None:
    """Unmount a FUSE mount (lazily when busy)."""
    if os.path.ismount(mount):
        command = ["fusermount3", "-u", str(mount)]
        unmounted = subprocess.run(command, capture_output=True, timeout=30, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], timeout=30, check=False)


@contextlib.contextmanager
def running_sshd(
    host_env: Mapping[str, Mapping[str, str]] | None = None, host_config: Mapping[str, str] | None = None
) -> Iterator[Sshd]:
    """An sshd on HOSTS for the block (``start_sshd``'s options); at its end every process its sessions
    started is killed by pid, then the sshd itself is stopped."""
    root = Path(tempfile.mkdtemp(prefix="keepwarm-sshd-"))
    server = start_sshd(root, host_env=host_env, host_config=host_config)
    try:
        yield server
    finally:
        for pid in session_processes(server):  # a failed run's cluster: its processes, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
