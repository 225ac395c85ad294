"""The `buurtalert` command: `up` runs the system, `areas import` loads area polygons."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="buurtalert: alert routing for Dutch neighbourhood watch. 112 first.",
    no_args_is_help=True,
    add_completion=False,
)
areas_app = typer.Typer(
    help="Manage the area registry (buurten, wijken, gemeenten).", no_args_is_help=True
)
app.add_typer(areas_app, name="areas")

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@app.command()
def up() -> None:
    """Run nats-server, redis-server and the three services in the foreground (Ctrl-C stops).

    Data lives under BUURTALERT_DATA_DIR (default .buurtalert/); the edge listens on
    BUURTALERT_HTTP_PORT (default 8080).
    """
    from buurtalert.supervisor import run_up

    raise typer.Exit(run_up())


@areas_app.command("import")
def areas_import(
    file: Annotated[Path, typer.Argument(help="GeoJSON FeatureCollection in WGS84")],
    redis_url: Annotated[
        str,
        typer.Option(envvar="BUURTALERT_REDIS_URL", help="Redis holding the registry"),
    ] = DEFAULT_REDIS,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Import areas: upsert, repair or report invalid features, compute adjacency."""
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from buurtalert.areas_import import import_areas
    from shared.registry import Registry

    if not file.exists():
        typer.echo(f"✗ no such file: {file}", err=True)
        raise typer.Exit(2)

    async def run() -> int:
        redis = Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=3)
        try:
            await redis.ping()
        except (RedisConnectionError, OSError):
            typer.echo(
                f"✗ cannot reach Redis at {redis_url}: is `make run` running? "
                "(or set BUURTALERT_REDIS_URL)",
                err=True,
            )
            return 3
        try:
            report = await import_areas(file, Registry(redis), progress=progress)
        except ValueError as exc:
            typer.echo(f"✗ {exc}", err=True)
            return 2
        finally:
            await redis.aclose()
        typer.echo(
            f"✓ {report.imported} new, {report.updated} updated; {report.total_areas} areas in "
            f"the registry, {report.adjacency_pairs} neighbour pairs ({report.seconds:.1f}s)"
        )
        for problem in report.problems[:50]:
            typer.echo(
                f"  ! feature {problem.index} ({problem.feature_id or 'no id'}): {problem.reason}"
            )
        if len(report.problems) > 50:
            typer.echo(f"  … and {len(report.problems) - 50} more problems")
        return 0

    raise typer.Exit(asyncio.run(run()))


gazetteer_app = typer.Typer(
    help="Local gazetteer: Dutch postcodes to coordinates (no online geocoder).",
    no_args_is_help=True,
)
app.add_typer(gazetteer_app, name="gazetteer")


@gazetteer_app.command("import")
def gazetteer_import(
    file: Annotated[Path, typer.Argument(help="CSV with columns postcode,lat,lon (PC6 or PC4)")],
    redis_url: Annotated[
        str,
        typer.Option(envvar="BUURTALERT_REDIS_URL", help="Redis holding the registry"),
    ] = DEFAULT_REDIS,
) -> None:
    """Load postcodes so reports that name one ("bij 6171 AB") get a location."""
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from shared import gazetteer

    if not file.exists():
        typer.echo(f"✗ no such file: {file}", err=True)
        raise typer.Exit(2)

    async def run() -> int:
        redis = Redis.from_url(redis_url, socket_connect_timeout=3)
        try:
            count = await gazetteer.load(redis, gazetteer.read_csv(file))
        except (RedisConnectionError, OSError):
            typer.echo(f"✗ cannot reach Redis at {redis_url}: is `make run` running?", err=True)
            return 3
        except ValueError as exc:
            typer.echo(f"✗ {exc}", err=True)
            return 2
        finally:
            await redis.aclose()
        typer.echo(f"✓ {count} postcodes loaded")
        return 0

    raise typer.Exit(asyncio.run(run()))


def main() -> None:
    """Entry point of the `buurtalert` script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
