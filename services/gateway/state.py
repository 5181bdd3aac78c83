"""The gateway's typed application state: what `create_app` puts on the app, by key."""

from __future__ import annotations

from aiohttp import web

from services.gateway.config import Settings
from services.gateway.engine import EngineClient
from services.gateway.feeds import FeedRegistry
from services.gateway.streams import StreamRegistry

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", EngineClient)
FEEDS = web.AppKey("feeds", FeedRegistry)
STREAMS = web.AppKey("streams", StreamRegistry)
