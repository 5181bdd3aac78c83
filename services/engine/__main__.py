"""`python -m services.engine`: runs the engine until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from services import jsonlog, tracing
from services.engine.app import Engine
from services.engine.config import ConfigError, Settings, is_http_url


async def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logging.getLogger(__name__).error("bad configuration: %s", exc)
        return 2
    for name in ("PIONEER_URLS", "PIONEER_URL"):
        pulled = [
            part.strip()
            for part in os.environ.get(name, "").split(",")
            if part.strip() and not is_http_url(part)
        ]
        if pulled:
            # Kept by deployments from before the step queue; say so rather than ignore it.
            logging.getLogger(__name__).warning(
                "%s: %s not used: a gRPC runner (pioneer) pulls its work from the engine's"
                " step queue; only http:// or https:// URLs (webhook runners) are pushed to",
                name,
                ", ".join(pulled),
            )
    engine = Engine(settings)
    try:
        await engine.start()
    except ConfigError as exc:
        logging.getLogger(__name__).error("bad configuration: %s", exc)
        await engine.stop(0)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await engine.stop()
    return 0


if __name__ == "__main__":
    jsonlog.configure("engine")
    tracing.configure("engine")
    sys.exit(asyncio.run(main()))
