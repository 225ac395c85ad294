"""What every provider stub shares: sliding-window limits, fault injection and the ledger.

The ledger is written from the stubs' event-loop thread and read from the test or benchmark
thread, so every access goes through one lock. Arrival times come from the monotonic clock
(CLOCK_MONOTONIC is system-wide on Linux, so times from a stub subprocess compare with the
caller's). A request's arrival is when its bytes were read from the socket (fasthttp stamps it
in the ASGI scope), as a provider's edge sees it, not when its handler got to run: on a busy
event loop the handlers of requests that arrived evenly may run in a burst. Handlers may
therefore admit arrivals slightly out of order, and the windows are kept sorted.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import phonenumbers
from starlette.requests import Request
from starlette.responses import Response

from tests.providers.fasthttp import ARRIVAL_KEY

#: The member channels of the public contract; SMS is Twilio, e-mail is SMTP.
Channel = Literal["sms", "telegram", "whatsapp", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "telegram", "whatsapp", "email")

# Stale per-key windows (a chat that got one message an hour ago) are swept this often, so
# a benchmark over 100k recipients keeps a small dict instead of one list per recipient.
_SWEEP_EVERY = 20_000
# Arrivals are kept this long past their window, so a handler that runs late (its request was
# read up to this long before a later one's handler ran) is still checked against every
# window it belongs to.
_REORDER_S = 2.0
#: Refusals by a limit kept for reports (the latest ones).
_REFUSALS_KEPT = 200


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `limit` messages per key in any window of `window_s` seconds."""

    name: str
    limit: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused by a limit, and when the busiest window frees a slot."""

    limit_names: tuple[str, ...]
    retry_after_s: float

    @property
    def retry_after_whole_s(self) -> int:
        """Retry-after rounded up to whole seconds, at least 1 (as Telegram reports it)."""
        return whole_seconds(self.retry_after_s)


def whole_seconds(seconds: float) -> int:
    """Seconds rounded up, at least 1: waiting less than the hint would be refused again."""
    return max(1, math.ceil(seconds))


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message a stub accepted for one recipient."""

    channel: Channel
    recipient: str  # E.164 (sms), chat id (telegram), wa_id digits (whatsapp), address (email)
    text: str
    provider_id: str
    arrived_at: float  # time.monotonic() when the stub read the request from its socket
    delivery_id: str | None = None  # the caller's own id, when the provider can carry one
    subject: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the control API and reports)."""
        data = asdict(self)
        data["meta"] = dict(self.meta)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivered:
        """The inverse of as_json."""
        return cls(
            channel=data["channel"],
            recipient=str(data["recipient"]),
            text=str(data["text"]),
            provider_id=str(data["provider_id"]),
            arrived_at=float(data["arrived_at"]),
            delivery_id=data.get("delivery_id"),
            subject=str(data.get("subject", "")),
            meta={str(k): str(v) for k, v in dict(data.get("meta") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A recipient who got the same text more than once on one channel."""

    channel: Channel
    recipient: str
    text: str
    count: int


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """How close the traffic came to one limit (for benchmark reports)."""

    name: str
    limit: int
    window_s: float
    admitted: int  # requests the limit let through (over all keys)
    violations: int  # requests refused because a window would have held more than `limit`
    max_in_window: int  # the busiest window's count, over all keys
    peak_share: float  # max_in_window / limit
    mean_share: float  # busiest key's mean rate over its busy period, as a share of the limit
    busiest_key_admitted: int  # how many requests that busiest key had

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: the HTTP (or SMTP) status to answer instead of handling."""

    status: int
    retry_after_s: float | None = None


class _Window:
    """The sliding windows of one limit, one sorted list of admitted arrival times per key."""

    __slots__ = ("admitted", "arrivals", "limit", "max_count", "stats", "violations")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        # Sorted; kept until _REORDER_S past their window, so counts use bisect, not len().
        self.arrivals: dict[str, list[float]] = {}
        # key -> [count, first arrival, last arrival], for the mean rate over the busy period.
        self.stats: dict[str, list[float]] = {}
        self.max_count = 0
        self.admitted = 0
        self.violations = 0

    def usage(self) -> LimitUsage:
        limit = self.limit
        best_count = 0.0
        best_share = 0.0
        for count, first, last in self.stats.values():
            if count < best_count:
                continue
            span = last - first
            # n arrivals paced exactly at the limit span (n-1) intervals of window/limit.
            share = (
                (count - 1) / span * limit.window_s / limit.limit
                if count > 1 and span > 0 and limit.limit > 0
                else 0.0
            )
            if count > best_count or share > best_share:
                best_count, best_share = count, share
        return LimitUsage(
            name=limit.name,
            limit=limit.limit,
            window_s=limit.window_s,
            admitted=self.admitted,
            violations=self.violations,
            max_in_window=self.max_count,
            peak_share=self.max_count / limit.limit if limit.limit > 0 else math.inf,
            mean_share=best_share,
            busiest_key_admitted=int(best_count),
        )


def _busiest_with(arrivals: Sequence[float], t: float, window_s: float) -> int:
    """The most arrivals (sorted) in any window (s - window_s, s] that would also hold t.

    Those windows end at t or at a later arrival less than one window after t; for an
    arrival later than all others that is only the window ending at t.
    """
    count = bisect.bisect_right(arrivals, t) - bisect.bisect_right(arrivals, t - window_s)
    later = bisect.bisect_right(arrivals, t)
    end = bisect.bisect_left(arrivals, t + window_s)
    for i in range(later, end):
        if i + 1 < end and arrivals[i + 1] == arrivals[i]:
            continue  # the window ending at the last of equal arrivals holds them all
        count = max(count, i + 1 - bisect.bisect_right(arrivals, arrivals[i] - window_s))
    return count


class Ledger:
    """Thread-safe record of requests, admitted messages, limit windows and violations."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._received: list[Delivered] = []
        self._requests: Counter[str] = Counter()
        self._callbacks: Counter[str] = Counter()
        self._admits_since_sweep = 0
        # The latest refusals by a limit, with the window that was full: when a test finds a
        # violation, this says when it happened and how the sends before it were spaced.
        self._refusals: deque[dict[str, Any]] = deque(maxlen=_REFUSALS_KEPT)

    # --- written by the stubs -------------------------------------------------------------

    def register(self, limit: Limit) -> None:
        """Make a limit known, so reports list it even when it was never hit."""
        with self._lock:
            self._window(limit)

    def count_request(self, channel: Channel) -> None:
        """Count one API request (or SMTP recipient) that reached a stub."""
        with self._lock:
            self._requests[channel] += 1

    def count_callback(self, channel: Channel, outcome: str) -> None:
        """Count one status callback by outcome (sent, failed, refused)."""
        with self._lock:
            self._callbacks[f"{channel}.{outcome}"] += 1

    def admit(
        self,
        checks: Sequence[tuple[Limit, str]],
        weight: int = 1,
        at: float | None = None,
    ) -> tuple[float, Refusal | None]:
        """Admit `weight` messages under every (limit, key), or refuse and count violations.

        `at` is the request's arrival (when it was read from the socket); the ledger's clock
        when None. All limits are checked before any is charged: a refused request occupies
        no window, so one overshoot does not cascade into later, correctly paced requests.
        An arrival earlier than ones already admitted (its handler ran late) is checked
        against every window that holds it, not only the one ending at it.
        """
        with self._lock:
            now = self._clock() if at is None else at
            refused: list[str] = []
            retry_after = 0.0
            peaks: list[int] = []
            windows = [(self._window(limit), key) for limit, key in checks]
            for window, key in windows:
                limit = window.limit
                known = window.arrivals.get(key) or []
                peak = _busiest_with(known, now, limit.window_s) + weight
                peaks.append(peak)
                if peak > limit.limit:
                    refused.append(limit.name)
                    window.violations += 1
                    lo = bisect.bisect_right(known, now - limit.window_s)
                    hi = bisect.bisect_left(known, now + limit.window_s)
                    self._refusals.append(
                        {
                            "limit": limit.name,
                            "key": key,
                            "at": now,
                            "nearby_s": [round(t - now, 4) for t in known[lo:hi]],
                        }
                    )
                    # The oldest arrival that must leave before `weight` more fit in a window.
                    expire = len(known) + weight - limit.limit - 1
                    if weight > limit.limit or not 0 <= expire < len(known):
                        wait = limit.window_s
                    else:
                        wait = max(0.0, known[expire] + limit.window_s - now)
                    retry_after = max(retry_after, wait)
            if refused:
                return now, Refusal(tuple(refused), retry_after)
            for (window, key), peak in zip(windows, peaks, strict=True):
                arrivals = window.arrivals.get(key)
                if arrivals is None:
                    arrivals = window.arrivals[key] = []
                if not arrivals or arrivals[-1] <= now:
                    arrivals.extend([now] * weight)
                else:
                    at_index = bisect.bisect_right(arrivals, now)
                    arrivals[at_index:at_index] = [now] * weight
                # Forget what no window, even one of a late handler's request, can hold.
                stale = bisect.bisect_right(
                    arrivals, arrivals[-1] - window.limit.window_s - _REORDER_S
                )
                if stale:
                    del arrivals[:stale]
                window.admitted += weight
                window.max_count = max(window.max_count, peak)
                stats = window.stats.get(key)
                if stats is None:
                    window.stats[key] = [float(weight), now, now]
                else:
                    stats[0] += weight
                    stats[1] = min(stats[1], now)
                    stats[2] = max(stats[2], now)
            self._admits_since_sweep += 1
            if self._admits_since_sweep >= _SWEEP_EVERY:
                self._sweep(now)
            return now, None

    def now(self) -> float:
        """The ledger's clock, for requests that no limit governs."""
        with self._lock:
            return self._clock()

    def record(self, message: Delivered) -> None:
        """Record one accepted message."""
        with self._lock:
            self._received.append(message)

    def _window(self, limit: Limit) -> _Window:
        # Called under the lock. The latest Limit wins, so a test may change a limit live.
        window = self._windows.get(limit.name)
        if window is None:
            window = self._windows[limit.name] = _Window(limit)
        elif window.limit != limit:
            window.limit = limit
        return window

    def _sweep(self, now: float) -> None:
        self._admits_since_sweep = 0
        for window in self._windows.values():
            horizon = now - window.limit.window_s - _REORDER_S
            stale = [k for k, d in window.arrivals.items() if not d or d[-1] <= horizon]
            for key in stale:
                del window.arrivals[key]

    # --- read by tests and benchmarks ------------------------------------------------------

    def received(self, channel: Channel | None = None) -> list[Delivered]:
        """Accepted messages in arrival order, optionally of one channel."""
        with self._lock:
            items = list(self._received)
        # Recorded as handlers ran; a late handler's request arrived earlier (stable for ties).
        items.sort(key=lambda m: m.arrived_at)
        return items if channel is None else [m for m in items if m.channel == channel]

    def counts_by_recipient(self, channel: Channel | None = None) -> dict[tuple[str, str], int]:
        """Accepted messages per (channel, recipient)."""
        counts: Counter[tuple[str, str]] = Counter(
            (m.channel, m.recipient) for m in self.received(channel)
        )
        return dict(counts)

    def duplicates(self, channel: Channel | None = None) -> list[Duplicate]:
        """Recipients who got the same text more than once (different alerts are fine)."""
        counts: Counter[tuple[Channel, str, str]] = Counter(
            (m.channel, m.recipient, m.text) for m in self.received(channel)
        )
        return [
            Duplicate(channel=c, recipient=r, text=t, count=n)
            for (c, r, t), n in counts.items()
            if n > 1
        ]

    def duplicate_deliveries(self) -> dict[str, int]:
        """Caller delivery ids accepted more than once (the strict exactly-once check)."""
        counts: Counter[str] = Counter(
            m.delivery_id for m in self.received() if m.delivery_id is not None
        )
        return {d: n for d, n in counts.items() if n > 1}

    def violations(self) -> dict[str, int]:
        """Refusals per limit name (every registered limit is listed, zero or not)."""
        with self._lock:
            return {name: w.violations for name, w in self._windows.items()}

    def refusals(self) -> list[dict[str, Any]]:
        """The latest refusals by a limit: limit, key, arrival time (the ledger's clock) and
        the admitted arrivals of that key less than one window away, relative to it."""
        with self._lock:
            return list(self._refusals)

    @property
    def requests_total(self) -> int:
        """Requests that reached any stub (refused ones included)."""
        with self._lock:
            return sum(self._requests.values())

    def requests_by_channel(self) -> dict[str, int]:
        """Requests per channel."""
        with self._lock:
            return dict(self._requests)

    def callbacks(self) -> dict[str, int]:
        """Status callbacks per '<channel>.<outcome>'."""
        with self._lock:
            return dict(self._callbacks)

    def max_in_window(self, limit_name: str) -> int:
        """The busiest window's count for a limit (over all its keys)."""
        with self._lock:
            window = self._windows.get(limit_name)
            if window is None:
                raise KeyError(f"unknown limit {limit_name!r}; known: {sorted(self._windows)}")
            return window.max_count

    def usage(self, limit_name: str) -> LimitUsage:
        """Share of one limit used: peak (busiest window) and mean over the busy period."""
        with self._lock:
            window = self._windows.get(limit_name)
            if window is None:
                raise KeyError(f"unknown limit {limit_name!r}; known: {sorted(self._windows)}")
            return window.usage()

    def limit_names(self) -> list[str]:
        """Every registered limit."""
        with self._lock:
            return sorted(self._windows)

    def summary(self) -> dict[str, Any]:
        """Everything a report needs, JSON-ready."""
        received = self.received()
        return {
            "requests_total": self.requests_total,
            "requests_by_channel": self.requests_by_channel(),
            "received_total": len(received),
            "received_by_channel": dict(Counter(m.channel for m in received)),
            "violations": self.violations(),
            "refusals": self.refusals(),
            "usage": {name: self.usage(name).as_json() for name in self.limit_names()},
            "duplicates": [asdict(d) for d in self.duplicates()],
            "duplicate_deliveries": self.duplicate_deliveries(),
            "callbacks": self.callbacks(),
        }

    def reset(self) -> None:
        """Forget everything recorded (limits stay registered, with empty windows)."""
        with self._lock:
            self._received.clear()
            self._requests.clear()
            self._callbacks.clear()
            self._refusals.clear()
            self._windows = {name: _Window(w.limit) for name, w in self._windows.items()}


class FaultQueue:
    """Failures to answer for the next requests instead of handling them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[Fault] = deque()

    def fail_next(self, n: int, status: int, retry_after: float | None = None) -> None:
        """Answer the next n requests with `status` (and a retry-after hint where it fits)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._pending.extend([Fault(status, retry_after)] * n)

    def take(self) -> Fault | None:
        """The fault for this request, if one is pending."""
        if not self._pending:  # unlocked fast path: the common case has nothing queued
            return None
        with self._lock:
            return self._pending.popleft() if self._pending else None

    def pending(self) -> int:
        """Faults still queued."""
        with self._lock:
            return len(self._pending)

    def clear(self) -> None:
        """Drop queued faults."""
        with self._lock:
            self._pending.clear()


class JSONBody(Response):
    """A compact JSON response (Starlette's JSONResponse, minus its per-call options)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise compactly, keeping non-ASCII text as UTF-8."""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def read_at(request: Request) -> float | None:
    """When the request was read from its socket (stamped by fasthttp), or None."""
    extensions = request.scope.get("extensions") or {}
    value = extensions.get(ARRIVAL_KEY)
    return None if value is None else float(value)


def is_loopback_url(url: str) -> bool:
    """True for an http(s) URL on a loopback host: the only place stubs post callbacks."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=65_536)
def valid_phone_number(e164: str) -> bool:
    """Whether phonenumbers deems an E.164 number valid (cached: parsing costs ~30 µs)."""
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(e164, None)))
    except phonenumbers.NumberParseException:
        return False


def normalise_addresses(values: Iterable[str]) -> set[str]:
    """Lower-cased, stripped addresses (e-mail comparisons are case-insensitive in practice)."""
    return {v.strip().lower() for v in values}


class StubBase:
    """What the HTTP and SMTP stubs share: ledger, fault queue, latency, background posts."""

    channel: Channel

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.faults = FaultQueue()
        self.base_url = ""  # set by the runner once the port is bound
        self.http: httpx.AsyncClient | None = None  # set by the runner, on the stubs' loop
        self._tasks: set[asyncio.Task[None]] = set()

    def fail_next(self, n: int = 1, status: int = 500, retry_after: float | None = None) -> None:
        """Answer the next n requests with `status` in the provider's own error format."""
        self.faults.fail_next(n, status, retry_after)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background job (a status callback) on the stubs' loop, keeping a reference."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post_callback(
        self,
        url: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
        allow_remote: bool,
    ) -> None:
        """POST one callback; never to a non-loopback host unless explicitly allowed."""
        # Tests must never reach the internet, even when a caller passes a real public URL.
        if not (allow_remote or is_loopback_url(url)):
            self.ledger.count_callback(self.channel, "refused")
            return
        if self.http is None:
            self.ledger.count_callback(self.channel, "failed")
            return
        try:
            response = await self.http.post(url, content=content, headers=dict(headers))
        except httpx.HTTPError as exc:
            # The receiver may be down on purpose (a test killing the edge); count, go on.
            self.ledger.count_callback(self.channel, "failed")
            self.ledger.count_callback(self.channel, f"failed_{type(exc).__name__}")
            return
        outcome = "sent" if response.status_code < 300 else f"http_{response.status_code}"
        self.ledger.count_callback(self.channel, outcome)

    async def drain(self, grace_s: float) -> None:
        """Let pending callbacks finish for up to grace_s seconds, then cancel the rest."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
