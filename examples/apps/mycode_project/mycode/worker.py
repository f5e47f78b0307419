"""A small real computation: the Collatz trajectory and prime factors of a number.

Service mode: ``work(task)`` answers one number, ``task.args.x``. Run mode: ``work(partition)`` gets
one partition of the manager's plan (``data`` = ``[first, last]``) and returns a table, one row per
number, that keepwarm writes as the partition's output.
"""

from __future__ import annotations

from typing import Any

from keepwarm import Partition


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def collatz_peak(n: int) -> int:
    peak = n
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        peak = max(peak, n)
    return peak


def prime_factors(n: int) -> list[int]:
    factors, divisor = [], 2
    while divisor * divisor <= n:
        while n % divisor == 0:
            factors.append(divisor)
            n //= divisor
        divisor += 1
    if n > 1:
        factors.append(n)
    return factors


class Worker:
    """start() builds a small cache once; work() answers one number, or tabulates one partition."""

    def start(self) -> None:
        self.cache = {n: collatz_steps(n) for n in range(1, 10_000)}

    def work(self, item: Any) -> Any:
        if isinstance(item, Partition):
            first, last = item.data
            return self.table(range(first, last + 1))
        x = item.args.x
        steps = self.cache.get(x)
        return {
            "x": x,
            "collatz_steps": steps if steps is not None else collatz_steps(x),
            "prime_factors": prime_factors(x),
        }

    def table(self, numbers: range) -> Any:
        """Run mode's output: one row per number (a pandas DataFrame)."""
        import pandas as pd

        rows = []
        for n in numbers:
            factors = prime_factors(n)
            steps = self.cache.get(n)
            rows.append(
                {
                    "x": n,
                    "collatz_steps": steps if steps is not None else collatz_steps(n),
                    "collatz_peak": collatz_peak(n),
                    "prime_factors": "*".join(map(str, factors)),
                    "factor_count": len(factors),
                    "is_prime": len(factors) == 1,
                }
            )
        return pd.DataFrame(rows)

    def stop(self) -> None:
        self.cache.clear()
