"""Load limits: a bounded number of requests in the server, and optional per-key request rates.

Both are touched only from the event loop thread, so they need no locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ProvisionedThroughputExceededException, ThrottlingException


class Admission:
    """At most `workers + queue` requests inside (being read, checked, run or waiting for a
    worker); the next one is refused at once with ThrottlingException (SDKs retry it with
    backoff) instead of piling up without bound, in memory or in latency."""

    def __init__(self, workers: int, queue: int) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("need at least one worker and a queue of 0 or more")
        self.capacity = workers + queue
        self.inside = 0

    def enter(self) -> None:
        if self.inside >= self.capacity:
            raise ThrottlingException(
                f"The server is busy ({self.inside} requests in progress or waiting); "
                "slow down and retry."
            )
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """A token bucket per access key: `rate` requests per second, bursts up to max(1, rate)."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, rate: float, now: float) -> None:
        burst = max(1.0, rate)
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if b.tokens < 1.0:
            raise ProvisionedThroughputExceededException(
                f"Key {key} is limited to {rate:g} requests per second; slow down and retry."
            )
        b.tokens -= 1.0
