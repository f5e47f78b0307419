"""Where loops run: OS processes of this host (local) or Dask workers (dask, on a cluster from cluster).

``make_backend`` picks one; ``base`` says what the supervisor asks of every backend and its loops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keepwarm.backends.base import LoopBackend
    from keepwarm.env import Env


def make_backend(env: Env, name: str | None = None) -> LoopBackend:
    """The backend named (else ``[cluster] backend``). Imported here, when chosen: Dask only for Dask,
    and neither when another module of this package is all that is needed."""
    if (name or env.settings.cluster.backend) == "dask":
        from keepwarm.backends.dask import DaskBackend

        return DaskBackend(env)
    from keepwarm.backends.local import LocalBackend

    return LocalBackend(env)


__all__ = ["make_backend"]
