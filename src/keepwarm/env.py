"""Where an app, its settings, its service files, logs and data live."""

from __future__ import annotations

import errno
import getpass
import os
import re
from functools import cached_property
from pathlib import Path

from keepwarm.errors import AppError, SettingsError
from keepwarm.settings import SETTINGS_FILE, AppSettings, load_settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def bundled_apps_path() -> Path:
    """The example apps shipped with keepwarm (in the wheel, or in the source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples" / "apps", here.parents[1] / "examples" / "apps"):
        if candidate.is_dir():
            return candidate
    raise AppError("the bundled example apps are missing from this installation; reinstall keepwarm")


def login_name() -> str:
    """The user's login name, made safe for use as a folder name."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid{os.getuid()}"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("._-")
    return safe[:64] or f"uid{os.getuid()}"


class Env:
    """An app and the places it uses, resolved once.

    ``app`` is an app folder's name under ``apps_path`` or a path to the folder. The share dir is the
    explicit argument, else ``$KEEPWARM_SHARE``, else ``[cluster] share_dir``, else
    ``$XDG_DATA_HOME/keepwarm``; the namespace is the explicit argument, else ``$KEEPWARM_NAMESPACE``,
    else ``[cluster] namespace``, else the login name.

    While the app's service runs, the app changing under it does not make the service unreachable: if
    the app's folder is gone or its ``app_settings.toml`` cannot be read, the Env of a running service
    holds the settings the service was started with (saved in ``service.json``) and ``settings_error``
    holds what went wrong, for status, health and stop to report (``state.app_change``). When no
    service of the app runs, the error is raised as before.
    """

    def __init__(
        self,
        app: str | os.PathLike[str],
        apps_path: str | os.PathLike[str] | None = None,
        *,
        share_dir: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        verbose: int = 0,
    ) -> None:
        self.verbose = verbose
        self.apps_path = Path(apps_path or os.environ.get("KEEPWARM_APPS_PATH") or ".").expanduser()
        self.settings_error: AppError | SettingsError | None = None
        found: Path | None = None
        try:
            found = _find_app(self.apps_path, Path(app))
            self.settings: AppSettings = load_settings(found / SETTINGS_FILE)
            self.app_dir = found
        except (AppError, SettingsError) as problem:
            self.app_dir, self.settings = _settings_of_running_service(
                found, Path(app).name, share_dir, namespace, problem
            )
            self.settings_error = problem
        self.app_target = self.app_dir.name
        self.app = self.app_target
        self.settings_path = self.app_dir / SETTINGS_FILE
        cluster = self.settings.cluster
        self.share_root = _share_root(share_dir, cluster.share_dir, self.app_dir)
        chosen = namespace or os.environ.get("KEEPWARM_NAMESPACE") or cluster.namespace
        self.namespace: str = chosen or login_name()
        if not _NAME.fullmatch(self.namespace):  # fullmatch: no trailing newline
            raise SettingsError(
                f"namespace {self.namespace!r} is not a safe name: use letters, digits, '_', '-', '.'"
            )

    def child_args(self) -> list[str]:
        """``--app``, ``--share-dir`` and ``--namespace``: what makes a keepwarm child process
        (``python -m keepwarm.<module>``) resolve this same app, share and namespace."""
        return [
            "--app",
            str(self.app_dir),
            "--share-dir",
            str(self.share_root),
            "--namespace",
            self.namespace,
        ]

    def __repr__(self) -> str:
        return f"Env(app={self.app_target!r}, namespace={self.namespace!r}, share={self.share_root})"

    def reload_settings(self) -> AppSettings:
        """Read ``app_settings.toml`` again (after an edit)."""
        self.settings = load_settings(self.settings_path)
        return self.settings

    @cached_property
    def service_dir(self) -> Path:
        return self.share_root / self.namespace / "service" / self.app_target

    @cached_property
    def queue_dir(self) -> Path:
        return self.service_dir / "queue"

    @cached_property
    def data_dir(self) -> Path:
        return self.share_root / self.namespace / "data" / self.app_target

    @cached_property
    def log_dir(self) -> Path:
        configured = os.environ.get("KEEPWARM_LOG_DIR")
        if configured:
            return Path(configured).expanduser() / self.app_target
        root = Path.home() / "log" / "execute"
        if self.namespace != login_name():
            root = root / self.namespace
        return root / self.app_target

    @cached_property
    def export_dir(self) -> Path:
        return Path(os.environ.get("KEEPWARM_EXPORT") or "~/export").expanduser() / self.app_target


AgiEnv = Env


def _find_app(apps_path: Path, app: Path) -> Path:
    candidates = [app] if app.is_absolute() else [apps_path / app, app]
    for candidate in candidates:
        if (candidate / SETTINGS_FILE).is_file():
            return candidate.resolve()
    names = sorted(p.parent.name for p in apps_path.glob(f"*/{SETTINGS_FILE}"))
    available = f"; apps there: {', '.join(names)}" if names else ""
    raise AppError(
        f"app {str(app)!r} not found: no {SETTINGS_FILE} in {apps_path / app}{available}. "
        "Pass --apps-path (or set KEEPWARM_APPS_PATH) to the folder that holds your apps"
    )


def _settings_of_running_service(
    found: Path | None,
    target: str,
    share_dir: str | os.PathLike[str] | None,
    namespace: str | None,
    problem: AppError | SettingsError,
) -> tuple[Path, AppSettings]:
    """The app's folder (``found``, None if it is gone) or its settings cannot be read: the folder and
    settings a running service of the app was started with, from its ``service.json``; else ``problem``.

    The service is looked for where the app's own settings cannot say (they are unreadable): the
    explicit share and namespace, else ``$KEEPWARM_SHARE`` and ``$KEEPWARM_NAMESPACE``, else the defaults.
    """
    from keepwarm.queue.state import read_service_record, saved_settings  # only on this error path

    name = found.name if found is not None else target
    if not _NAME.fullmatch(name):
        raise problem
    chosen = namespace or os.environ.get("KEEPWARM_NAMESPACE") or login_name()
    service_dir = _share_root(share_dir, None, found or Path.cwd()) / chosen / "service" / name
    record = read_service_record(service_dir / "service.json")
    saved = saved_settings(record) if record is not None and record.desired == "running" else None
    if record is None or saved is None:
        raise problem
    return found or (Path(record.app_dir) if record.app_dir else service_dir), saved


def _share_root(explicit: str | os.PathLike[str] | None, configured: str | None, app_dir: Path) -> Path:
    chosen = explicit or os.environ.get("KEEPWARM_SHARE")
    if chosen:
        return Path(chosen).expanduser().absolute()
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() else (app_dir / path).absolute()
    data_home = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(data_home).expanduser().absolute() / "keepwarm"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700 (``mkdir -p`` would use the umask)."""
    missing = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():  # a file where a folder should be
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None
    return path
