"""Where an app, its settings, its service files, logs and data live."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from functools import cached_property
from pathlib import Path

from keepwarm.errors import AppError, AppNotFound, AppNotInstalled, SettingsError
from keepwarm.queue.layout import ServiceLayout, data_dir, service_dir
from keepwarm.queue.state import read_service_record, saved_settings
from keepwarm.settings import (
    SAFE_NAME_CHARACTERS,
    SAFE_NAME_RULE,
    SETTINGS_FILE,
    AppSection,
    AppSettings,
    ClusterSettings,
    is_safe_name,
    load_settings,
)


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
    safe = re.sub(f"[^{SAFE_NAME_CHARACTERS}]", "_", name).lstrip("._-")
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
        apps_folder = Path(apps_path or os.environ.get("KEEPWARM_APPS_PATH") or ".").expanduser()
        settings_error: AppError | SettingsError | None = None
        found: Path | None = None
        try:
            found = _find_app(apps_folder, Path(app))
            settings = load_settings(found / SETTINGS_FILE)
            app_dir = found
        except (AppError, SettingsError) as problem:
            app_dir, settings = _settings_of_running_service(
                found, Path(app).name, share_dir, namespace, problem
            )
            settings_error = problem
        cluster = settings.cluster
        self._place(
            apps_path=apps_folder,
            app_dir=app_dir,
            settings=settings,
            settings_path=app_dir / SETTINGS_FILE,
            share_root=resolve_share_root(share_dir, cluster.share_dir, app_dir),
            namespace=resolve_namespace(namespace, cluster.namespace),
            settings_error=settings_error,
            verbose=verbose,
        )

    @classmethod
    def of_service_folder(cls, folder: Path, share_root: Path, namespace: str) -> Env:
        """The Env of the service in ``folder`` (``<share>/<namespace>/service/<app>``), from its own
        ``service.json``, for a service whose app folder is not at hand.

        ``ps`` lists every service of a namespace, whoever started it and from wherever: the service
        folder records the settings the service runs with, which is all its status and health need.
        """
        record_path = ServiceLayout(folder).service_record
        saved = saved_settings(read_service_record(record_path))
        unknown = AppSettings.model_construct(
            app=AppSection.model_construct(worker="unknown:Worker"), args={}, cluster=ClusterSettings()
        )
        env = cls.__new__(cls)
        env._place(
            apps_path=folder.parent,
            app_dir=folder,
            settings=saved or unknown,
            settings_path=record_path,
            share_root=share_root,
            namespace=namespace,
            settings_error=None,
            verbose=0,
        )
        return env

    def _place(
        self,
        *,
        apps_path: Path,
        app_dir: Path,
        settings: AppSettings,
        settings_path: Path,
        share_root: Path,
        namespace: str,
        settings_error: AppError | SettingsError | None,
        verbose: int,
    ) -> None:
        """Set every attribute of an Env: the one place both ways of building one go through."""
        self.verbose = verbose
        self.apps_path = apps_path
        self.app_dir = app_dir
        self.app_target = app_dir.name
        self.app = self.app_target
        self.settings: AppSettings = settings
        self.settings_path = settings_path
        self.settings_error = settings_error
        self.share_root = share_root
        self.namespace: str = namespace

    def child_args(self) -> list[str]:
        """``--app``, ``--share-dir`` and ``--namespace``: what makes a keepwarm child process
        (``python -m keepwarm.<module>``, ``keepwarm._sys.child.child_command``) resolve this same app,
        share and namespace."""
        return [
            "--app",
            str(self.app_dir),
            "--share-dir",
            str(self.share_root),
            "--namespace",
            self.namespace,
        ]

    @classmethod
    def of_child(cls, options: argparse.Namespace) -> Env:
        """The Env a keepwarm child process was given (``keepwarm._sys.child.child_parser``'s options)."""
        return cls(options.app, options.apps_path, share_dir=options.share_dir, namespace=options.namespace)

    def __repr__(self) -> str:
        return f"Env(app={self.app_target!r}, namespace={self.namespace!r}, share={self.share_root})"

    def reload_settings(self) -> AppSettings:
        """Read ``app_settings.toml`` again (after an edit)."""
        self.settings = load_settings(self.settings_path)
        return self.settings

    @cached_property
    def layout(self) -> ServiceLayout:
        """Every path of this app's service on disk."""
        return ServiceLayout.of(self.share_root, self.namespace, self.app_target)

    @cached_property
    def service_dir(self) -> Path:
        return self.layout.root

    @cached_property
    def queue_dir(self) -> Path:
        return self.layout.queue.root

    @cached_property
    def data_dir(self) -> Path:
        return data_dir(self.share_root, self.namespace, self.app_target)

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
    raise AppNotFound(
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
    name = found.name if found is not None else target
    if not is_safe_name(name):
        raise problem
    try:
        chosen = resolve_namespace(namespace)
    except SettingsError:
        raise problem from None
    folder = service_dir(resolve_share_root(share_dir), chosen, name)
    record = read_service_record(ServiceLayout(folder).service_record)
    saved = saved_settings(record) if record is not None and record.desired == "running" else None
    if record is None or saved is None:
        raise problem
    return found or (Path(record.app_dir) if record.app_dir else folder), saved


def resolve_share_root(
    explicit: str | os.PathLike[str] | None = None, configured: str | None = None, app_dir: Path | None = None
) -> Path:
    """The share: ``explicit``, else ``$KEEPWARM_SHARE``, else ``configured`` (an app's ``[cluster]
    share_dir``, relative to its ``app_dir``), else ``$XDG_DATA_HOME/keepwarm``."""
    chosen = explicit or os.environ.get("KEEPWARM_SHARE")
    if chosen:
        return Path(chosen).expanduser().absolute()
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() or app_dir is None else (app_dir / path).absolute()
    data_home = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(data_home).expanduser().absolute() / "keepwarm"


def resolve_namespace(explicit: str | None = None, configured: str | None = None) -> str:
    """The namespace: ``explicit``, else ``$KEEPWARM_NAMESPACE``, else ``configured`` (an app's
    ``[cluster] namespace``), else the login name; SettingsError when it is not a safe name."""
    chosen = explicit or os.environ.get("KEEPWARM_NAMESPACE") or configured or login_name()
    if not is_safe_name(chosen):
        raise SettingsError(f"namespace {chosen!r} is not a safe name: {SAFE_NAME_RULE}")
    return chosen


def namespace_root(
    namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, str]:
    """The share and namespace of what names no app (``ps``, ``down --all``, workflow runs): as an
    app's, with nothing configured."""
    return resolve_share_root(share_dir), resolve_namespace(namespace)


# ---------------------------------------------------------------------- the app's interpreter


def venv_dir(env: Env) -> Path:
    """Where an isolated app's virtual environment lives."""
    return env.share_root / env.namespace / "venv" / env.app_target


def venv_python(folder: Path) -> Path:
    """The interpreter of the virtual environment in ``folder``."""
    return folder / "bin" / "python"


def app_python(env: Env) -> Path:
    """The interpreter that runs the app: its own venv's when isolated (which must be installed)."""
    if not env.settings.cluster.isolated:
        return Path(sys.executable)
    python = venv_python(venv_dir(env))
    if not python.is_file():
        raise AppNotInstalled(
            f"{env.app_target} is isolated ([cluster] isolated = true) and its virtual environment "
            f"({venv_dir(env)}) does not exist yet: keepwarm install {env.app_target}"
        )
    return python


__all__ = ["AgiEnv", "Env", "app_python", "bundled_apps_path", "login_name", "venv_dir"]
