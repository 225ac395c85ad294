"""Redis commands issued in the same event-loop turn, sent as one pipeline.

FastStream handles the messages of one JetStream fetch concurrently, each in its own task, and
each of them makes the same few Redis calls at about the same moment. Sent one by one, every
call costs a socket write, a read and a wake-up (in the notifier a quarter of its CPU went
there). Gathered, they cost one of each per turn. Each caller still gets exactly its own
replies, or its own error; nothing changes for it but the cost.

redis-py has no auto-pipelining of its own (ioredis has, for Node); this is that, small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

#: Adds commands to the pipeline; the caller gets their replies in order.
Build = Callable[[Pipeline], object]


class AutoPipeline:
    """Gathers the commands of concurrent callers into one pipeline per event-loop turn."""

    def __init__(self, redis: Redis, max_commands: int = 2000) -> None:
        self.redis = redis
        self.max_commands = max_commands
        self._queue: list[tuple[Build, asyncio.Future[list[Any]]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._scripts: dict[str, AsyncScript] = {}

    def queue_script(
        self, pipe: Pipeline, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
    ) -> None:
        """Queue a registered Lua script on a pipeline by its SHA.

        Not by redis-py's pipeline script support: that asks SCRIPT EXISTS before every
        execute, a second round trip each time. A NOSCRIPT reply (a restarted Redis) loads the
        scripts and runs just the refused calls again.
        """
        self._scripts[script.sha] = script
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def run(self, build: Build) -> list[Any]:
        """Run the commands `build` queues, together with everyone else's; their replies."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((build, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One Lua script call, gathered like any other command; its reply."""
        (reply,) = await self.run(lambda pipe: self.queue_script(pipe, script, keys, args))
        return reply

    def _start_flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._flush(queue))
        # The loop keeps only a weak reference to a task: hold it until it ends.
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, queue: list[tuple[Build, asyncio.Future[list[Any]]]]) -> None:
        start = 0
        while start < len(queue):
            pipe = self.redis.pipeline(transaction=False)
            spans: list[tuple[asyncio.Future[list[Any]], int, int]] = []
            commands = 0
            while start < len(queue) and (not spans or commands < self.max_commands):
                build, future = queue[start]
                start += 1
                before = len(pipe.command_stack)
                try:
                    build(pipe)
                except Exception as exc:  # noqa: BLE001 - the caller's own error, to the caller
                    del pipe.command_stack[before:]
                    _settle(future, exc)
                    continue
                commands = len(pipe.command_stack)
                spans.append((future, before, commands))
            if not spans:
                continue
            try:
                replies = await self._execute(pipe)
            except Exception as exc:  # noqa: BLE001 - each caller gets the error as its own
                for future, _, _ in spans:
                    _settle(future, exc)
                continue
            except BaseException:
                for future, _, _ in spans:
                    future.cancel()
                raise
            for future, first, end in spans:
                mine = replies[first:end]
                error = next((r for r in mine if isinstance(r, Exception)), None)
                _settle(future, error if error is not None else mine)

    async def _execute(self, pipe: Pipeline) -> list[Any]:
        stack = list(pipe.command_stack)
        async with pipe:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        refused = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if refused:
            for script in self._scripts.values():
                script.sha = await self.redis.script_load(script.script)
            async with self.redis.pipeline(transaction=False) as again:
                for i in refused:
                    args, options = stack[i]
                    again.execute_command(*args, **options)
                retried = await again.execute(raise_on_error=False)
            for i, reply in zip(refused, retried, strict=True):
                replies[i] = reply
        return replies


def _settle(future: asyncio.Future[list[Any]], outcome: list[Any] | BaseException) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
