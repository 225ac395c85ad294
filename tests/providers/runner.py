"""Run all four provider stubs on free loopback ports: in-process (a thread) or as a process.

In-process, one background thread owns one event loop that serves the three uvicorn
servers, the aiosmtpd server and a small control API; the test thread only reads the ledger.
As a subprocess (`python -m tests.providers --port-file F`) the stubs get their own GIL, so
a benchmark's client and the stubs do not compete for one core; RemoteStubs reads the
ledger through the control API.
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
from collections.abc import Callable, Iterator, Mapping
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
from tests.providers.fasthttp import CoalescingH11Protocol
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
    """Twilio, Telegram, WhatsApp and SMTP stubs sharing one ledger, as a context manager."""

    def __init__(
        self, config: StubsConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or StubsConfig()
        # A test may pass a fake clock to make windows deterministic; arrival times use it too.
        self.ledger = Ledger(clock)
        self.twilio = TwilioStub(self.ledger, self.config.twilio)
        self.telegram = TelegramStub(self.ledger, self.config.telegram)
        self.whatsapp = WhatsAppStub(self.ledger, self.config.whatsapp)
        self.smtp = SmtpStub(self.ledger, self.config.smtp)
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
            (self.twilio, self.twilio.app),
            (self.telegram, self.telegram.app),
            (self.whatsapp, self.whatsapp.app),
            (None, control_app(self)),
        ]
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
                http=CoalescingH11Protocol,
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
        """The provider settings the notifier reads, pointing at these stubs."""
        cfg = self.config
        return {
            "TWILIO_API_BASE": self.twilio.base_url,
            "TWILIO_ACCOUNT_SID": cfg.twilio.account_sid,
            "TWILIO_AUTH_TOKEN": cfg.twilio.auth_token,
            "TWILIO_FROM_NUMBER": cfg.twilio.from_number,
            "TELEGRAM_API_BASE": self.telegram.base_url,
            "TELEGRAM_BOT_TOKEN": cfg.telegram.bot_token,
            "WHATSAPP_API_BASE": self.whatsapp.base_url,
            "WHATSAPP_API_VERSION": cfg.whatsapp.api_version,
            "WHATSAPP_PHONE_NUMBER_ID": cfg.whatsapp.phone_number_id,
            "WHATSAPP_TOKEN": cfg.whatsapp.token,
            "SMTP_HOST": cfg.host,
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_FROM": cfg.smtp.from_address,
        }

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
            Route("/config/{channel}", configure, methods=["POST"]),
        ]
    )


# --- subprocess mode ----------------------------------------------------------------------


class RemoteStubs:
    """Stubs running in another process (python -m tests.providers), read over HTTP."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = dict(info)
        self.control_url = str(info["control_url"])
        self._client = httpx.Client(base_url=self.control_url, timeout=10.0, trust_env=False)

    def env(self) -> dict[str, str]:
        """The provider settings the notifier reads."""
        return {str(k): str(v) for k, v in dict(self.info["env"]).items()}

    def summary(self) -> dict[str, Any]:
        """The ledger summary (violations, usage, duplicates, counts)."""
        response = self._client.get("/summary")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def received(self, channel: Channel | None = None) -> list[Delivered]:
        """Accepted messages in arrival order."""
        params = {"channel": channel} if channel else {}
        response = self._client.get("/received", params=params)
        response.raise_for_status()
        return [Delivered.from_json(item) for item in response.json()]

    def violations(self) -> dict[str, int]:
        """Refusals per limit name."""
        return {str(k): int(v) for k, v in self.summary()["violations"].items()}

    @property
    def requests_total(self) -> int:
        """Requests that reached any stub."""
        return int(self.summary()["requests_total"])

    def usage(self, limit_name: str) -> LimitUsage:
        """Share of a limit used."""
        return LimitUsage(**self.summary()["usage"][limit_name])

    def max_in_window(self, limit_name: str) -> int:
        """The busiest window's count for a limit."""
        return self.usage(limit_name).max_in_window

    def fail_next(
        self, channel: Channel, n: int = 1, status: int = 500, retry_after: float | None = None
    ) -> None:
        """Inject failures into one channel's stub."""
        body = {"channel": channel, "n": n, "status": status, "retry_after": retry_after}
        self._client.post("/fail_next", json=body).raise_for_status()

    def configure(self, channel: Channel, **fields: Any) -> dict[str, Any]:
        """Change config fields of one stub while it runs (sets are replaced, not merged)."""
        response = self._client.post(f"/config/{channel}", json=fields)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self) -> None:
        """Forget records and windows."""
        self._client.post("/reset").raise_for_status()

    def close(self) -> None:
        """Close the control connection."""
        self._client.close()


@contextlib.contextmanager
def spawn_stubs(
    config: StubsConfig | None = None, *, timeout: float = _START_TIMEOUT_S
) -> Iterator[RemoteStubs]:
    """Run the stubs as a separate process for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="provider-stubs-") as tmp:
        port_file = Path(tmp) / "stubs.json"
        config_file = Path(tmp) / "config.json"
        config_file.write_text((config or StubsConfig()).model_dump_json())
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.providers",
                "--port-file",
                str(port_file),
                "--config",
                str(config_file),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        remote: RemoteStubs | None = None
        try:
            deadline = time.monotonic() + timeout
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"provider stubs exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("provider stubs did not write their port file")
                time.sleep(0.02)
            remote = RemoteStubs(json.loads(port_file.read_text()))
            yield remote
        finally:
            if remote is not None:
                remote.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def serve_forever(config: StubsConfig, port_file: Path | None, summary_file: Path | None) -> None:
    """Run the stubs until SIGINT/SIGTERM; write the port file once they accept requests."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ProviderStubs(config) as stubs:
        info = {"env": stubs.env(), "control_url": stubs.control_url, "pid": os.getpid()}
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
