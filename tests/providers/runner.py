"""Run the provider stubs on free loopback ports: in-process (a thread) or as processes.

In-process, one background thread owns one event loop that serves the three uvicorn
servers, the aiosmtpd server and a small control API; the test thread only reads the ledger.
`spawn_stubs()` runs each provider as its own process instead (`python -m tests.providers
--channel telegram ...`), as the providers are separate companies' servers: one stub's work
(Twilio's and WhatsApp's receipts, a burst of e-mail) then never holds up another's event
loop, the stubs get their own GILs apart from a benchmark's client, and RemoteStubs reads and
steers the four through their control APIs as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.providers.common import (
    CHANNELS,
    Channel,
    Delivered,
    Duplicate,
    JSONBody,
    Ledger,
    LimitUsage,
    StubBase,
)
from tests.providers.fasthttp import stamping_protocol
from tests.providers.smtp import SmtpConfig, SmtpStub
from tests.providers.telegram import TelegramConfig, TelegramStub
from tests.providers.twilio import TwilioConfig, TwilioStub
from tests.providers.whatsapp import WhatsAppConfig, WhatsAppStub

REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 20.0
_CALLBACK_DRAIN_S = 1.0


class StubsConfig(BaseModel):
    """Configuration of all four stubs (JSON-serialisable for the subprocess)."""

    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    whatsapp: WhatsAppConfig = Field(default_factory=WhatsAppConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    host: str = "127.0.0.1"

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        # Stubs accept any credentials a test hands out; they must never face a network.
        if not ip_address(value).is_loopback:
            raise ValueError("stubs bind loopback addresses only")
        return value


def _bind(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ProviderStubs:
    """Twilio, Telegram, WhatsApp and SMTP stubs sharing one ledger, as a context manager.

    `channels` serves only those stubs (the others exist, on a ledger of their own, but get
    no server and no settings in env()): `python -m tests.providers --channel X` runs one.
    """

    def __init__(
        self,
        config: StubsConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        channels: Iterable[Channel] = CHANNELS,
    ) -> None:
        self.config = config or StubsConfig()
        self.channels: tuple[Channel, ...] = tuple(c for c in CHANNELS if c in set(channels))
        if not self.channels:
            raise ValueError(f"no stub to serve; channels are {CHANNELS}")
        # A test may pass a fake clock to make windows deterministic; arrival times use it too.
        self.clock = clock
        self.ledger = Ledger(clock)

        def ledger_of(channel: Channel) -> Ledger:
            # An unserved stub must not list its limits in this process's summary.
            return self.ledger if channel in self.channels else Ledger(clock)

        self.twilio = TwilioStub(ledger_of("sms"), self.config.twilio)
        self.telegram = TelegramStub(ledger_of("telegram"), self.config.telegram)
        self.whatsapp = WhatsAppStub(ledger_of("whatsapp"), self.config.whatsapp)
        self.smtp = SmtpStub(ledger_of("email"), self.config.smtp)
        self.smtp_port = 0
        self.control_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[uvicorn.Server] = []
        self._serve_tasks: list[asyncio.Task[None]] = []
        self._smtp_server: asyncio.AbstractServer | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def stubs(self) -> dict[Channel, StubBase]:
        """The stubs by channel name."""
        return {
            "sms": self.twilio,
            "telegram": self.telegram,
            "whatsapp": self.whatsapp,
            "email": self.smtp,
        }

    @property
    def configs(self) -> dict[Channel, BaseModel]:
        """Each stub's live config object, by channel name."""
        return {
            "sms": self.twilio.config,
            "telegram": self.telegram.config,
            "whatsapp": self.whatsapp.config,
            "email": self.smtp.config,
        }

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> ProviderStubs:
        """Start the loop thread and every server; return when all accept connections."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="provider-stubs", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start_servers(), loop).result(_START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Drain callbacks briefly, stop every server and the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._stop_servers(), loop).result(
                    _START_TIMEOUT_S
                )
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_START_TIMEOUT_S)
            self._loop = None
            self._thread = None

    def __enter__(self) -> ProviderStubs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Anything left (an SMTP session a client never closed) is cancelled, not leaked.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _start_servers(self) -> None:
        host = self.config.host
        # trust_env=False: a proxy set in the environment must not see loopback callbacks.
        self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        apps: list[tuple[StubBase | None, Any]] = [
            (stub, stub.app)
            for stub in (self.twilio, self.telegram, self.whatsapp)
            if stub.channel in self.channels
        ]
        apps.append((None, control_app(self)))
        # Arrivals are stamped when a request is read from its socket, on the ledger's clock.
        protocol = stamping_protocol(self.clock)
        for stub, app in apps:
            sock = _bind(host)
            port = sock.getsockname()[1]
            config = uvicorn.Config(
                app,
                log_level="warning",
                log_config=None,  # leave the host process's logging configuration alone
                access_log=False,
                lifespan="off",
                timeout_keep_alive=60,
                backlog=2048,
                http=protocol,
            )
            server = uvicorn.Server(config)
            self._servers.append(server)
            task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
            self._serve_tasks.append(task)
            if stub is None:
                self.control_url = _url(host, port)
            else:
                stub.base_url = _url(host, port)
                stub.http = self._http
        if "email" in self.channels:
            loop = asyncio.get_running_loop()
            self._smtp_server = await loop.create_server(self.smtp.factory, host=host, port=0)
            self.smtp_port = self._smtp_server.sockets[0].getsockname()[1]
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not all(s.started for s in self._servers):
            for task in self._serve_tasks:
                if task.done():
                    task.result()  # raises the startup error
                    raise RuntimeError("a stub server stopped during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("stub servers did not start")
            await asyncio.sleep(0.01)

    async def _stop_servers(self) -> None:
        for stub in self.stubs.values():
            await stub.drain(_CALLBACK_DRAIN_S)
        for server in self._servers:
            server.should_exit = True
        if self._serve_tasks:
            await asyncio.wait(self._serve_tasks, timeout=_START_TIMEOUT_S)
        if self._smtp_server is not None:
            self._smtp_server.close()
        if self._http is not None:
            await self._http.aclose()

    # --- what the notifier reads -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The provider settings the notifier reads, pointing at these stubs (served ones)."""
        cfg = self.config
        by_channel: dict[Channel, dict[str, str]] = {
            "sms": {
                "TWILIO_API_BASE": self.twilio.base_url,
                "TWILIO_ACCOUNT_SID": cfg.twilio.account_sid,
                "TWILIO_AUTH_TOKEN": cfg.twilio.auth_token,
                "TWILIO_FROM_NUMBER": cfg.twilio.from_number,
            },
            "telegram": {
                "TELEGRAM_API_BASE": self.telegram.base_url,
                "TELEGRAM_BOT_TOKEN": cfg.telegram.bot_token,
            },
            "whatsapp": {
                "WHATSAPP_API_BASE": self.whatsapp.base_url,
                "WHATSAPP_API_VERSION": cfg.whatsapp.api_version,
                "WHATSAPP_PHONE_NUMBER_ID": cfg.whatsapp.phone_number_id,
                "WHATSAPP_TOKEN": cfg.whatsapp.token,
            },
            "email": {
                "SMTP_HOST": cfg.host,
                "SMTP_PORT": str(self.smtp_port),
                "SMTP_FROM": cfg.smtp.from_address,
            },
        }
        env: dict[str, str] = {}
        for channel in self.channels:
            env.update(by_channel[channel])
        return env

    # --- records (delegated to the ledger) -------------------------------------------------

    def received(self, channel: Channel | None = None) -> list[Delivered]:
        """Accepted messages in arrival order."""
        return self.ledger.received(channel)

    def counts_by_recipient(self, channel: Channel | None = None) -> dict[tuple[str, str], int]:
        """Accepted messages per (channel, recipient)."""
        return self.ledger.counts_by_recipient(channel)

    def duplicates(self, channel: Channel | None = None) -> list[Duplicate]:
        """Recipients who got the same text more than once."""
        return self.ledger.duplicates(channel)

    def duplicate_deliveries(self) -> dict[str, int]:
        """Delivery ids accepted more than once."""
        return self.ledger.duplicate_deliveries()

    def violations(self) -> dict[str, int]:
        """Refusals per limit name."""
        return self.ledger.violations()

    @property
    def requests_total(self) -> int:
        """Requests that reached any stub."""
        return self.ledger.requests_total

    def max_in_window(self, limit_name: str) -> int:
        """The busiest window's count for a limit."""
        return self.ledger.max_in_window(limit_name)

    def usage(self, limit_name: str) -> LimitUsage:
        """Share of a limit used (peak window and mean over the busy period)."""
        return self.ledger.usage(limit_name)

    def summary(self) -> dict[str, Any]:
        """Everything a report needs, JSON-ready."""
        return self.ledger.summary()

    def reset(self) -> None:
        """Forget records and windows, drop queued faults (config stays)."""
        self.ledger.reset()
        for stub in self.stubs.values():
            stub.faults.clear()

    def fail_next(
        self, channel: Channel, n: int = 1, status: int = 500, retry_after: float | None = None
    ) -> None:
        """Inject failures into one channel's stub."""
        self.stubs[channel].fail_next(n, status, retry_after)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Poll until predicate() is true; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.01)

    def wait_for_received(
        self, n: int, channel: Channel | None = None, timeout: float = 5.0
    ) -> list[Delivered]:
        """Wait until at least n messages (of a channel) were accepted; return them."""
        self.wait_for(
            lambda: len(self.received(channel)) >= n, timeout, f"{n} messages ({channel})"
        )
        return self.received(channel)


# --- control API (used by RemoteStubs; harmless in-process) ----------------------------------


def control_app(stubs: ProviderStubs) -> Starlette:
    """Read the ledger and steer the stubs over HTTP (for the subprocess mode)."""

    async def summary(request: Request) -> Response:
        data = stubs.summary()
        data["faults_pending"] = {c: s.faults.pending() for c, s in stubs.stubs.items()}
        return JSONBody(data)

    async def received(request: Request) -> Response:
        channel = request.query_params.get("channel")
        if channel is not None and channel not in CHANNELS:
            return JSONBody({"detail": f"unknown channel {channel!r}"}, status_code=400)
        items = stubs.received(channel)
        return JSONBody([m.as_json() for m in items])

    async def env(request: Request) -> Response:
        return JSONBody(stubs.env())

    async def reset(request: Request) -> Response:
        stubs.reset()
        return JSONBody({"reset": True})

    async def faults(request: Request) -> Response:
        return JSONBody({c: s.faults.pending() for c, s in stubs.stubs.items()})

    async def fail_next(request: Request) -> Response:
        try:
            data = json.loads(await request.body())
            channel = data["channel"]
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel {channel!r}")
            stubs.fail_next(
                channel,
                int(data.get("n", 1)),
                int(data.get("status", 500)),
                None if data.get("retry_after") is None else float(data["retry_after"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            return JSONBody({"detail": str(exc)}, status_code=400)
        return JSONBody({"queued": int(data.get("n", 1))})

    async def configure(request: Request) -> Response:
        channel = request.path_params["channel"]
        if channel not in CHANNELS:
            return JSONBody({"detail": f"unknown channel {channel!r}"}, status_code=400)
        current = stubs.configs[channel]
        try:
            patch = json.loads(await request.body())
            if not isinstance(patch, dict):
                raise ValueError("body must be an object of config fields")
            merged = type(current).model_validate({**current.model_dump(), **patch})
        except (ValueError, ValidationError) as exc:
            return JSONBody({"detail": str(exc)}, status_code=400)
        # Update in place: the stub's handlers hold this very object.
        for name in patch:
            setattr(current, name, getattr(merged, name))
        return JSONBody(current.model_dump(mode="json"))

    return Starlette(
        routes=[
            Route("/summary", summary),
            Route("/received", received),
            Route("/env", env),
            Route("/reset", reset, methods=["POST"]),
            Route("/fail_next", fail_next, methods=["POST"]),
            Route("/faults", faults),
            Route("/config/{channel}", configure, methods=["POST"]),
        ]
    )


# --- subprocess mode ----------------------------------------------------------------------


class RemoteStubs:
    """Stubs running as processes (python -m tests.providers), read and steered as one.

    Each process serves some of the channels (spawn_stubs: one each) with a ledger of its
    own; RemoteStubs merges them over their control APIs: counts add up, `received()` is in
    arrival order over all of them (CLOCK_MONOTONIC is system-wide), and duplicate delivery
    ids are found across processes as in one ledger.
    """

    def __init__(self, infos: Sequence[Mapping[str, Any]]) -> None:
        self.infos = [dict(info) for info in infos]
        self._clients: list[httpx.Client] = []
        self._by_channel: dict[Channel, httpx.Client] = {}
        for info in self.infos:
            client = httpx.Client(base_url=str(info["control_url"]), timeout=10.0, trust_env=False)
            self._clients.append(client)
            for channel in info.get("channels", CHANNELS):
                if channel in self._by_channel:
                    raise ValueError(f"channel {channel!r} is served by two processes")
                self._by_channel[channel] = client

    @property
    def pids(self) -> dict[Channel, int]:
        """The process serving each channel."""
        return {
            channel: int(info["pid"])
            for info in self.infos
            for channel in info.get("channels", CHANNELS)
        }

    def env(self) -> dict[str, str]:
        """The provider settings the notifier reads."""
        env: dict[str, str] = {}
        for info in self.infos:
            env.update({str(k): str(v) for k, v in dict(info["env"]).items()})
        return env

    def _client(self, channel: Channel) -> httpx.Client:
        client = self._by_channel.get(channel)
        if client is None:
            raise KeyError(f"no stub process serves {channel!r}")
        return client

    def _summaries(self) -> list[dict[str, Any]]:
        parts = []
        for client in self._clients:
            response = client.get("/summary")
            response.raise_for_status()
            parts.append(response.json())
        return parts

    def _counts(self) -> dict[str, Any]:
        """The per-process summaries added up (duplicates not yet merged)."""
        parts = self._summaries()
        merged: dict[str, Any] = {
            "requests_total": sum(int(p["requests_total"]) for p in parts),
            "received_total": sum(int(p["received_total"]) for p in parts),
        }
        for name in (
            "requests_by_channel",
            "received_by_channel",
            "violations",
            "callbacks",
            "faults_pending",
        ):
            total: Counter[str] = Counter()
            for part in parts:
                for key, value in dict(part.get(name) or {}).items():
                    total[str(key)] += int(value)
            merged[name] = dict(total)
        usage: dict[str, Any] = {}
        for part in parts:
            for limit_name, item in dict(part["usage"]).items():
                known = usage.get(limit_name)
                if known is None or item["admitted"] > known["admitted"]:
                    usage[limit_name] = item
        merged["usage"] = usage
        merged["refusals"] = sorted(
            (item for part in parts for item in part.get("refusals") or []),
            key=lambda item: float(item["at"]),
        )
        return merged

    def summary(self) -> dict[str, Any]:
        """The ledger summary over all processes (violations, usage, duplicates, counts)."""
        data = self._counts()
        received = self.received()
        duplicates: Counter[tuple[str, str, str]] = Counter(
            (m.channel, m.recipient, m.text) for m in received
        )
        data["duplicates"] = [
            {"channel": c, "recipient": r, "text": t, "count": n}
            for (c, r, t), n in duplicates.items()
            if n > 1
        ]
        ids: Counter[str] = Counter(m.delivery_id for m in received if m.delivery_id is not None)
        data["duplicate_deliveries"] = {d: n for d, n in ids.items() if n > 1}
        return data

    def received(self, channel: Channel | None = None) -> list[Delivered]:
        """Accepted messages in arrival order."""
        if channel is not None:
            clients = [self._by_channel[channel]] if channel in self._by_channel else []
        else:
            clients = self._clients
        items: list[Delivered] = []
        for client in clients:
            params = {"channel": channel} if channel else {}
            response = client.get("/received", params=params)
            response.raise_for_status()
            items.extend(Delivered.from_json(item) for item in response.json())
        if len(clients) > 1:
            items.sort(key=lambda m: m.arrived_at)  # stable: ties keep each stub's order
        return items

    def violations(self) -> dict[str, int]:
        """Refusals per limit name."""
        return {str(k): int(v) for k, v in self._counts()["violations"].items()}

    @property
    def requests_total(self) -> int:
        """Requests that reached any stub."""
        return int(self._counts()["requests_total"])

    def usage(self, limit_name: str) -> LimitUsage:
        """Share of a limit used."""
        return LimitUsage(**self._counts()["usage"][limit_name])

    def max_in_window(self, limit_name: str) -> int:
        """The busiest window's count for a limit."""
        return self.usage(limit_name).max_in_window

    def fail_next(
        self, channel: Channel, n: int = 1, status: int = 500, retry_after: float | None = None
    ) -> None:
        """Inject failures into one channel's stub."""
        body = {"channel": channel, "n": n, "status": status, "retry_after": retry_after}
        self._client(channel).post("/fail_next", json=body).raise_for_status()

    def faults_pending(self, channel: Channel) -> int:
        """Injected failures of one channel not yet answered (cheap: no ledger summary)."""
        response = self._client(channel).get("/faults")
        response.raise_for_status()
        return int(response.json()[channel])

    def configure(self, channel: Channel, **fields: Any) -> dict[str, Any]:
        """Change config fields of one stub while it runs (sets are replaced, not merged)."""
        response = self._client(channel).post(f"/config/{channel}", json=fields)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self) -> None:
        """Forget records and windows in every process."""
        for client in self._clients:
            client.post("/reset").raise_for_status()

    def close(self) -> None:
        """Close the control connections."""
        for client in self._clients:
            client.close()


@contextlib.contextmanager
def spawn_stubs(
    config: StubsConfig | None = None, *, timeout: float = _START_TIMEOUT_S
) -> Iterator[RemoteStubs]:
    """Run each provider stub as its own process for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="provider-stubs-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text((config or StubsConfig()).model_dump_json())
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        procs: dict[Channel, subprocess.Popen[bytes]] = {}
        remote: RemoteStubs | None = None
        try:
            for channel in CHANNELS:
                procs[channel] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.providers",
                        "--channel",
                        channel,
                        "--port-file",
                        str(Path(tmp) / f"{channel}.json"),
                        "--config",
                        str(config_file),
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + timeout
            infos = []
            for channel, proc in procs.items():
                port_file = Path(tmp) / f"{channel}.json"
                while not port_file.exists():
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"provider stub {channel!r} exited with {proc.returncode}"
                        )
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"provider stub {channel!r} wrote no port file")
                    time.sleep(0.02)
                infos.append(json.loads(port_file.read_text()))
            remote = RemoteStubs(infos)
            yield remote
        finally:
            if remote is not None:
                remote.close()
            _stop_all(list(procs.values()), timeout)


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after `timeout`)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_forever(
    config: StubsConfig,
    port_file: Path | None,
    summary_file: Path | None,
    channels: Iterable[Channel] = CHANNELS,
) -> None:
    """Run the stubs until SIGINT/SIGTERM; write the port file once they accept requests."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ProviderStubs(config, channels=channels) as stubs:
        info = {
            "env": stubs.env(),
            "control_url": stubs.control_url,
            "pid": os.getpid(),
            "channels": list(stubs.channels),
        }
        line = json.dumps(info)
        if port_file is not None:
            # Written whole, then renamed: a reader never sees half a file.
            partial = port_file.with_name(port_file.name + ".part")
            partial.write_text(line)
            partial.replace(port_file)
        print(line, flush=True)
        while not stop.wait(0.5):
            pass
        if summary_file is not None:
            summary_file.write_text(json.dumps(stubs.summary(), indent=2))
