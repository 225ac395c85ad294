"""AutoPipeline on a real redis-server: one pipeline per turn, each caller its own replies."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.autopipe import AutoPipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def count_pipelines(redis: Redis) -> list[int]:
    """Count the pipelines the client opens (one per round trip of AutoPipeline)."""
    opened = [0]
    original: Callable[..., Pipeline] = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Pipeline:
        opened[0] += 1
        return original(*args, **kwargs)

    redis.pipeline = counting  # type: ignore[method-assign]
    return opened


async def test_concurrent_callers_share_one_pipeline(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    opened = count_pipelines(redis)
    auto = AutoPipeline(redis)

    async def caller(i: int) -> list[Any]:
        return await auto.run(lambda pipe: (pipe.incrby(f"k:{i}", i), pipe.get(f"k:{i}")))

    replies = await asyncio.gather(*(caller(i) for i in range(50)))
    assert replies == [[i, str(i)] for i in range(50)]
    assert opened[0] == 1
    # Sequential calls are not held back: each runs at once, in its own turn.
    assert await auto.run(lambda pipe: pipe.get("k:7")) == ["7"]
    assert opened[0] == 2
    await redis.aclose()


async def test_one_callers_error_stays_its_own(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.set("text", "not a number")
    auto = AutoPipeline(redis)

    def broken_build(pipe: Pipeline) -> None:
        raise ValueError("bad arguments")

    results = await asyncio.gather(
        auto.run(lambda pipe: pipe.incr("counter")),
        auto.run(lambda pipe: (pipe.incr("text"), pipe.incr("counter"))),
        auto.run(broken_build),
        auto.run(lambda pipe: pipe.incr("counter")),
        return_exceptions=True,
    )
    assert results[0] == [1]
    assert isinstance(results[1], ResponseError)
    assert isinstance(results[2], ValueError)
    assert results[3] == [3]  # the failing caller's other command did run (no transaction)
    assert await redis.get("counter") == "3"
    await redis.aclose()


async def test_lost_scripts_are_loaded_again_and_only_refused_calls_rerun(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    auto = AutoPipeline(redis)
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await auto.script(script, ["s"], [5]) == 5
    await redis.script_flush()  # as a restarted Redis without persistence of scripts

    def build(pipe: Pipeline) -> None:
        pipe.incr("plain")
        auto.queue_script(pipe, script, ["s"], [2])

    results = await asyncio.gather(auto.run(build), auto.script(script, ["s"], [3]))
    assert results[0][0] == 1
    assert sorted([results[0][1], results[1]]) == [7, 10]
    assert await redis.get("plain") == "1"  # the command beside the refused script ran once
    assert await redis.get("s") == "10"
    await redis.aclose()


async def test_unreachable_redis_fails_every_caller(redis_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    auto = AutoPipeline(redis)
    results = await asyncio.gather(
        *(auto.run(lambda pipe: pipe.get("x")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)
    await redis.aclose()


async def test_large_turns_are_split_by_command_count(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    opened = count_pipelines(redis)
    auto = AutoPipeline(redis, max_commands=6)

    def three(i: int) -> Callable[[Pipeline], object]:
        return lambda pipe: (pipe.set(f"a:{i}", i), pipe.get(f"a:{i}"), pipe.incr("n"))

    replies = await asyncio.gather(*(auto.run(three(i)) for i in range(10)))
    assert [r[1] for r in replies] == [str(i) for i in range(10)]
    assert sorted(r[2] for r in replies) == list(range(1, 11))
    assert opened[0] == 5  # two callers (six commands) per pipeline
    await redis.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    auto = AutoPipeline(redis)
    first = asyncio.ensure_future(auto.run(lambda pipe: pipe.incr("c")))
    second = asyncio.ensure_future(auto.run(lambda pipe: pipe.incr("c")))
    await asyncio.sleep(0)
    first.cancel()
    assert await second in ([1], [2])
    with pytest.raises(asyncio.CancelledError):
        await first
    await redis.aclose()
