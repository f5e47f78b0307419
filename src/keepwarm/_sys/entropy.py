"""Random names without a system call, that no app's ``random.seed()`` can make repeat.

Task ids and temp-file suffixes are drawn from a generator of keepwarm's own, seeded from the
operating system at import and again in every forked child (the module-level ``random`` functions
share one generator with the app, which may seed it: two processes would then draw the same ids).
"""

from __future__ import annotations

import os
import random

_generator = random.Random()
os.register_at_fork(after_in_child=_generator.seed)


def random_hex(bits: int) -> str:
    """``bits`` random bits as lowercase hex digits (zero-padded to ``bits / 4`` digits)."""
    return f"{_generator.getrandbits(bits):0{bits // 4}x}"
