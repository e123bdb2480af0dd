"""Build the FastAPI application around a gateway."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api.errors import install_error_handlers
from service.api.guards import Guards
from service.api.routes import TURNOUT_HEADERS, router
from service.config import TurnoutConfig
from service.gateway import Gateway


def create_app(gateway: Gateway, config: TurnoutConfig) -> FastAPI:
    """The OpenAI-compatible app; its only state is ``app.state.gateway`` and ``app.state.limits``."""
    app = FastAPI(title="Turnout", version="0.1.0")
    app.state.gateway = gateway
    app.state.limits = config.limits
    app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(Guards, keys=config.auth.keys(), max_ongoing=config.limits.max_ongoing_requests)
    if config.server.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=config.server.cors_origins, allow_methods=["*"], allow_headers=["*"],
            expose_headers=list(TURNOUT_HEADERS),  # a browser client may read the route and cache result
        )
    return app
