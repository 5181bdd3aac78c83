"""`python -m services.engine`: runs the engine until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from services import jsonlog
from services.engine.app import Engine
from services.engine.config import ConfigError, Settings


async def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logging.getLogger(__name__).error("bad configuration: %s", exc)
        return 2
    if os.environ.get("PIONEER_URL", "").strip():
        # Kept by deployments from before the step queue; say so rather than ignore it.
        logging.getLogger(__name__).warning(
            "PIONEER_URL is not used: step runners pull their work from the engine's step queue"
        )
    engine = Engine(settings)
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await engine.stop()
    return 0


if __name__ == "__main__":
    jsonlog.configure("engine")
    sys.exit(asyncio.run(main()))
