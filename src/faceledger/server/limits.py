"""Load limits: bounded request bodies, a bounded number of requests in the server, and
optional per-key (or per-address) request rates.

Order matters (issue 18): a request first has its body read - bounded in size, in the bytes all
unfinished bodies may hold together, and in time (a minimum average rate after a grace period,
and a total deadline) - and only then, once its signature is checked, takes one of the
`workers + queue` slots. So connections that trickle a body hold no slot and are dropped when
they fall below the rate; they cannot lock signed callers out.

Everything here is touched only from the event loop thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    ImageTooLargeException,
    InvalidParameterException,
    ProvisionedThroughputExceededException,
    RequestTimeoutException,
    ThrottlingException,
)

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


@dataclass(frozen=True)
class BodyTiming:
    """How fast a body must arrive: after `grace` seconds, at least `min_rate` bytes/s on
    average since the headers; and all of it within `timeout` seconds."""

    grace: float = 10.0
    min_rate: float = 4096.0
    timeout: float = 120.0

    def deadline(self, start: float, received: int) -> float:
        """When the next bytes must have arrived by, given `received` so far."""
        allowed = max(self.grace, received / self.min_rate) if self.min_rate > 0 else self.timeout
        return start + min(self.timeout, allowed)


class BodyBudget:
    """Bytes of request bodies held in memory at once, across all requests (read or being
    served); past it a new body is refused with ThrottlingException."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.capacity:
            raise ThrottlingException(
                "The server holds as many request bodies as it may; slow down and retry.")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


@dataclass
class BodyReader:
    """Reads one request's body under a size limit, a shared budget and a timing."""

    limit: int
    budget: BodyBudget
    timing: BodyTiming
    too_large: Callable[[int], Exception]
    held: int = 0  # bytes taken from the budget: give them back with `release`
    complete: bool = False  # the whole body was read (else the connection must close)

    async def read(self, declared: str | None, receive: Receive) -> bytes:
        """The whole body (Content-Length or chunked alike: bytes are counted as they come)."""
        if declared is not None:
            if not declared.strip().isdigit() or not declared.strip().isascii():
                raise InvalidParameterException("Content-Length is not a number.")
            if int(declared) > self.limit:
                raise self.too_large(int(declared))
        start = time.monotonic()
        chunks: list[bytes] = []
        size = 0
        while True:
            wait = self.timing.deadline(start, size) - time.monotonic()
            if wait <= 0:
                raise _too_slow(size, time.monotonic() - start)
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise _too_slow(size, time.monotonic() - start) from None
            if message["type"] == "http.disconnect":
                raise InvalidParameterException("The client disconnected before the body ended.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise self.too_large(size)
            self.budget.take(len(chunk))
            self.held += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
                return b"".join(chunks)

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


def body_too_large(limit: int) -> Callable[[int], Exception]:
    """The API's refusal of a body over `limit` bytes."""
    def refuse(size: int) -> Exception:
        return ImageTooLargeException(
            f"Request body is at least {size} bytes; the limit is {limit} bytes.")
    return refuse


def _too_slow(size: int, elapsed: float) -> RequestTimeoutException:
    return RequestTimeoutException(
        f"The request body arrived too slowly ({size} bytes in {elapsed:.1f} s); "
        "send it at once.")


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


class Slots:
    """At most `capacity` requests inside at once (the console's pages); beyond, refused."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.inside = 0

    def enter(self) -> bool:
        if self.inside >= self.capacity:
            return False
        self.inside += 1
        return True

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


@dataclass
class FailureThrottle:
    """Per-address failures (console sign-in): `burst` failures at once, then one per
    `1 / rate` seconds. Checked before the attempt, charged only when it fails, so correct
    sign-ins from a busy address are not slowed. At most `max_addresses` are remembered
    (refilled buckets are forgotten first), so spoofed variety cannot grow memory."""

    rate: float = 5 / 60
    burst: float = 10.0
    max_addresses: int = 10_000
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _refill(self, address: str, now: float) -> _Bucket:
        b = self.buckets.get(address)
        if b is None:
            if len(self.buckets) >= self.max_addresses:
                self._forget(now)
            b = self.buckets[address] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        return b

    def allowed(self, address: str, now: float) -> float | None:
        """None if `address` may try now, else the seconds until it may."""
        b = self._refill(address, now)
        return None if b.tokens >= 1.0 else (1.0 - b.tokens) / self.rate

    def failed(self, address: str, now: float) -> None:
        b = self._refill(address, now)
        b.tokens = max(0.0, b.tokens - 1.0)

    def _forget(self, now: float) -> None:
        full = [a for a, b in self.buckets.items()
                if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        for a in full or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[a]
