"""Every error becomes an OpenAI-style JSON body with the right status, here and only here."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from engine.errors import ClientError, TurnoutError
from router.errors import NoHealthyTargetError
from router.protocol import ROUTE_HEADER

log = logging.getLogger("turnout.api")
_RETRY_AFTER = {503: "2"}


class PayloadTooLargeError(ClientError):
    """The request body is larger than ``limits.max_body_bytes``."""

    type = "payload_too_large"
    status_code = 413


class AuthenticationError(ClientError):
    """Missing or wrong API key."""

    type = "invalid_api_key"
    status_code = 401


def error_body(message: str, type_: str, status: int, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def error_response(error: TurnoutError) -> JSONResponse:
    """The HTTP response for a Turnout error (headers: Retry-After, the route tried)."""
    status = error.status_code
    headers = {"Retry-After": _RETRY_AFTER[status]} if status in _RETRY_AFTER else {}
    if isinstance(error, NoHealthyTargetError):
        headers[ROUTE_HEADER] = error.route
    body = error_body(error.message, error.type, status, error.param)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map Turnout errors, FastAPI's own errors and unexpected exceptions onto OpenAI bodies."""

    @app.exception_handler(TurnoutError)
    async def _turnout(_: Request, error: TurnoutError) -> JSONResponse:
        if error.status_code >= 500:
            log.warning("%s: %s", error.type, error.message)
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(error), "invalid_request_error", 400), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(error.detail), kind, error.status_code), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        body = error_body(f"internal error ({type(error).__name__})", "server_error", 500)
        return JSONResponse(body, status_code=500)
