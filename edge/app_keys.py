"""The keys under which the composition root (edge/app.py) puts the edge's parts into the aiohttp
application, for the handlers (edge/http.py) to find."""

from __future__ import annotations

from aiohttp import web

from shared.credentials import CredentialReloader

from edge.health import TaskHealth
from edge.service import EdgeService
from edge.sync import SyncHub

SERVICE = web.AppKey("edge_service", EdgeService)
HUB = web.AppKey("edge_sync", SyncHub)
HEALTH = web.AppKey("edge_health", TaskHealth)
CREDENTIALS = web.AppKey("edge_credentials", CredentialReloader)
