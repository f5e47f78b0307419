"""A small real computation: the Collatz trajectory and prime factors of a number."""

from __future__ import annotations

from typing import Any


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


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
    """start() builds a small cache once; work() answers one number."""

    def start(self) -> None:
        self.cache = {n: collatz_steps(n) for n in range(1, 10_000)}

    def work(self, item: Any) -> dict[str, Any]:
        x = item.args.x
        steps = self.cache.get(x)
        return {
            "x": x,
            "collatz_steps": steps if steps is not None else collatz_steps(x),
            "prime_factors": prime_factors(x),
        }

    def stop(self) -> None:
        self.cache.clear()
