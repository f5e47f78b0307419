"""Acting on several services at once: each in its own thread, each one's error kept for the report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict, TypeVar

from keepwarm.api import Service
from keepwarm.errors import FleetError, KeepwarmError

T = TypeVar("T")
M = TypeVar("M")


class StoppedService(TypedDict):
    """One service that ``down`` (or ``down --all``) stopped: its name, its app, and stop's message."""

    service: str
    app: str
    message: str


def in_threads(function: Callable[[M], T], items: list[M]) -> list[T]:
    """``function`` of every item, all at once, in the items' order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(function, items))


def catching(function: Callable[[M], T]) -> Callable[[M], T | KeepwarmError]:
    """``function`` returning a KeepwarmError it raises, so that one item's failure stops no other."""

    def run(item: M) -> T | KeepwarmError:
        try:
            return function(item)
        except KeepwarmError as exc:
            return exc

    return run


async def in_thread(function: Callable[[], T]) -> T:
    """``function()`` in a worker thread, for the async twins of blocking calls."""
    return await asyncio.to_thread(function)


def stop_services(services: dict[str, Service], scope: str, *, timeout: float | None) -> list[StoppedService]:
    """Stop every service at once, each as ``stop`` does; one ``{service, app, message}`` per
    service (keyed by the names given). FleetError naming ``scope`` and each service that did not stop."""

    def stop(named: tuple[str, Service]) -> StoppedService:
        name, service = named
        outcome = service.stop(timeout=timeout)
        return StoppedService(service=name, app=service.env.app_target, message=outcome["message"])

    results = in_threads(catching(stop), list(services.items()))
    errors = [
        f"service {name!r}: {result}"
        for name, result in zip(services, results, strict=True)
        if isinstance(result, KeepwarmError)
    ]
    if errors:
        raise FleetError(f"{scope}: not every service stopped:\n" + "\n".join(errors))
    return [result for result in results if not isinstance(result, KeepwarmError)]
