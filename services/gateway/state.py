"""The gateway's typed application state: what `create_app` puts on the app, by key."""

from __future__ import annotations

from aiohttp import web

from discovery_client import AsyncClient
from services.gateway.config import Settings
from services.gateway.feeds import FeedRegistry
from services.gateway.streams import StreamRegistry

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncClient)
FEEDS = web.AppKey("feeds", FeedRegistry)
STREAMS = web.AppKey("streams", StreamRegistry)
