"""Run mode's execution modes, the reference system's bits: 1 pool, 2 cython, 4 dask, 8 rapids.

``python`` (0) runs the work plan in the calling process; ``pool`` one process per plan worker;
``dask`` one task per partition on the Dask backend's cluster; ``cython`` runs the app with its worker
module compiled, on any of those three; ``rapids`` is accepted and refused unless a CUDA GPU and cuDF
are present. Whether a mode can run here is checked before anything starts, with the reason when not.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from keepwarm.errors import ModeError
from keepwarm.settings import ClusterSettings

POOL = 1
CYTHON = 2
DASK = 4
RAPIDS = 8
_PARTS = (("pool", POOL), ("dask", DASK), ("cython", CYTHON), ("rapids", RAPIDS))
_LETTERS = {"p": POOL, "c": CYTHON, "d": DASK, "r": RAPIDS}
# The modes a benchmark tries, in this order: every executor, plain and compiled.
BENCHMARK_BITS = (0, CYTHON, POOL, POOL | CYTHON, DASK, DASK | CYTHON)


@dataclass(frozen=True, order=True)
class RunMode:
    """A combination of the mode bits; ``name`` is ``python``, ``pool``, ``dask+cython``, ..."""

    bits: int

    @property
    def pool(self) -> bool:
        """One process of keepwarm's own per plan worker."""
        return bool(self.bits & POOL)

    @property
    def cython(self) -> bool:
        """The app's worker module compiled with Cython."""
        return bool(self.bits & CYTHON)

    @property
    def dask(self) -> bool:
        """One Dask task per partition."""
        return bool(self.bits & DASK)

    @property
    def rapids(self) -> bool:
        """The RAPIDS bit (a CUDA GPU with cuDF)."""
        return bool(self.bits & RAPIDS)

    @property
    def executor(self) -> str:
        """Where partitions run: ``python`` (this process), ``pool`` or ``dask``."""
        return "dask" if self.dask else "pool" if self.pool else "python"

    @property
    def name(self) -> str:
        """``python``, ``pool``, ``dask+cython``, ...: the bits' names joined by ``+``."""
        parts = [name for name, bit in _PARTS if self.bits & bit]
        return "+".join(parts) or "python"

    def __str__(self) -> str:
        """The mode's name."""
        return self.name

    @classmethod
    def parse(cls, value: str | int | RunMode) -> RunMode:
        """A mode from its name (``pool+cython``), its bits (3) or the reference's letters (``pc``)."""
        if isinstance(value, RunMode):
            return value
        if isinstance(value, bool):
            raise ModeError(f"mode {value!r} is not a mode; {MODE_HELP}")
        bits = value if isinstance(value, int) else _bits_of(value.strip().lower())
        if not 0 <= bits < 16:
            raise ModeError(f"mode {value!r} is out of range: the bits are 0-15; {MODE_HELP}")
        if bits & POOL and bits & DASK:
            raise ModeError(
                f"mode {value!r} combines pool and dask; a Dask run already gives each plan worker its "
                "own process: use dask"
            )
        return cls(bits)


MODE_HELP = (
    "modes: python, pool, cython, dask, rapids, or a combination such as pool+cython or dask+cython "
    "(also the reference's bits: 1 pool, 2 cython, 4 dask, 8 rapids)"
)


def _bits_of(text: str) -> int:
    if text.isdigit():
        return int(text)
    names = dict(_PARTS) | {"python": 0}
    parts = [part for part in re.split(r"[+,\s]+", text) if part]
    if parts and all(part in names for part in parts):
        return sum({names[part] for part in parts})
    if text and set(text) <= set(_LETTERS):
        return sum({_LETTERS[letter] for letter in text})
    raise ModeError(f"unknown mode {text!r}; {MODE_HELP}")


def settings_mode(cluster: ClusterSettings) -> RunMode:
    """The mode ``[cluster]`` asks for: ``pool``, ``cython``, ``rapids``, and dask when a scheduler,
    hosts or ``backend = "dask"`` is configured."""
    dask = cluster.backend == "dask" or bool(cluster.scheduler) or bool(cluster.hosts)
    bits = (POOL if cluster.pool and not dask else 0) | (CYTHON if cluster.cython else 0)
    return RunMode(bits | (DASK if dask else 0) | (RAPIDS if cluster.rapids else 0))


def unavailable_reason(mode: RunMode) -> str | None:
    """Why ``mode`` cannot run here (None when it can)."""
    reasons = []
    if mode.dask and importlib.util.find_spec("distributed") is None:
        reasons.append("mode dask needs the 'distributed' package: pip install 'keepwarm[dask]'")
    if mode.cython:
        problem = cython_problem()
        if problem:
            reasons.append(f"mode cython needs Cython and a C compiler: {problem}")
    if mode.rapids:
        problem = rapids_problem()
        if problem:
            reasons.append(f"mode rapids needs a CUDA GPU and cuDF: {problem}")
    return "; ".join(reasons) or None


def require_available(mode: RunMode) -> None:
    """Raise ``ModeError`` saying why ``mode`` cannot run on this machine, if it cannot."""
    reason = unavailable_reason(mode)
    if reason:
        raise ModeError(reason)


def c_compiler() -> str | None:
    """The C compiler a Cython build uses: ``$CC``, else the one Python was built with, else cc/gcc."""
    configured = os.environ.get("CC") or ""
    candidates = [configured.split()[0]] if configured.strip() else []
    built_with = sysconfig.get_config_var("CC") or ""
    candidates += [built_with.split()[0]] if built_with.strip() else []
    candidates += ["cc", "gcc", "clang"]
    if configured.strip():
        candidates = candidates[:1]  # an explicit $CC is the only one tried: the user chose it
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def cython_problem() -> str | None:
    """Why Cython cannot compile here (no Cython, no C compiler), or None."""
    problems = []
    if importlib.util.find_spec("Cython") is None:
        problems.append("Cython is not installed (pip install 'keepwarm[cython]')")
    if c_compiler() is None:
        chosen = os.environ.get("CC")
        problems.append(
            f"the C compiler $CC={chosen!r} is not found"
            if chosen
            else "no C compiler found (cc, gcc, clang)"
        )
        problems[-1] += "; install one (e.g. apt-get install gcc) or set CC"
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        problems.append(f"Python's headers are missing ({include}/Python.h): install python3-dev")
    return "; ".join(problems) or None


def rapids_problem() -> str | None:
    """Why RAPIDS cannot run here (no CUDA GPU, no cuDF), or None."""
    problems = []
    if not any(Path(device).exists() for device in ("/dev/nvidiactl", "/dev/nvidia0")):
        problems.append("no CUDA GPU found (no /dev/nvidia0)")
    if importlib.util.find_spec("cudf") is None:
        problems.append("cuDF is not installed (pip install cudf-cu12)")
    return "; ".join(problems) or None


def available_benchmark_modes() -> tuple[list[RunMode], dict[str, str]]:
    """The modes a benchmark runs here, and the reason each of the others is skipped."""
    modes = [RunMode(bits) for bits in BENCHMARK_BITS]
    if rapids_problem() is None:
        modes += [RunMode(mode.bits | RAPIDS) for mode in list(modes)]
    runnable, skipped = [], {}
    for mode in modes:
        reason = unavailable_reason(mode)
        if reason:
            skipped[mode.name] = reason
        else:
            runnable.append(mode)
    if rapids_problem() is not None:
        skipped["rapids"] = f"mode rapids needs a CUDA GPU and cuDF: {rapids_problem()}"
    return runnable, skipped
