"""python -m tests.providers [--channel C ...] --port-file F [--config C]: stubs as a process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.providers.common import CHANNELS
from tests.providers.runner import StubsConfig, serve_forever


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.providers",
        description="Twilio, Telegram, WhatsApp and SMTP stubs on free loopback ports. Prints "
        "(and writes to --port-file) one JSON line: env, control_url, pid, channels.",
    )
    parser.add_argument(
        "--channel",
        action="append",
        choices=CHANNELS,
        help="serve only this channel's stub (repeatable; default: all four)",
    )
    parser.add_argument("--port-file", type=Path, help="write the JSON line here when ready")
    parser.add_argument("--config", help="StubsConfig as a JSON file path or an inline JSON object")
    parser.add_argument("--summary-file", type=Path, help="write the ledger summary on exit")
    args = parser.parse_args(argv)
    config = StubsConfig()
    if args.config:
        text = args.config
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        config = StubsConfig.model_validate(json.loads(text))
    serve_forever(config, args.port_file, args.summary_file, args.channel or CHANNELS)


if __name__ == "__main__":
    main()
