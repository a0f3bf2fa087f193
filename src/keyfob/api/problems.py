"""The one place errors become HTTP responses: ``application/problem+json``.

Framework errors (404/405, body parsing, validation) are translated here into keyfob
errors; validation details keep the field location and message, never the input.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from keyfob import errors
from keyfob.errors import PROBLEM_JSON

__all__ = ["PROBLEM_JSON", "install", "render", "request_id"]


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def render(error: errors.KeyfobError, rid: str | None) -> JSONResponse:
    return JSONResponse(
        error.problem(rid),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers(),
    )


def _safe_errors(raw: list[Any]) -> list[dict[str, Any]]:
    # Pydantic puts the submitted value in "input" (and sometimes "ctx"): drop both.
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in raw]


async def _keyfob_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.KeyfobError)
    return render(exc, request_id(request))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        return render(errors.InvalidRequest("the body is not valid JSON"), request_id(request))
    if any(isinstance(e.get("input"), bytes) for e in raw):
        # FastAPI hands on the raw bytes when the content type does not say JSON.
        return render(
            errors.InvalidRequest("the body must be JSON (Content-Type: application/json)"),
            request_id(request),
        )
    details = _safe_errors(raw)
    summary = "; ".join(
        f"{'.'.join(str(p) for p in d['loc'] if p != 'body')}: {d['msg']}" for d in details[:5]
    )
    return render(errors.ValidationFailed(summary, errors=details), request_id(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cls = errors.for_status(exc.status_code)
    detail = {
        404: "no such route",
        405: f"{request.method} is not allowed here",
        413: "the request body is too large",
    }.get(exc.status_code, str(exc.detail) if isinstance(exc.detail, str) else cls.title)
    if exc.status_code == 400:
        detail = "the request body could not be read"
    response = render(cls(detail), request_id(request))
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.KeyfobError, _keyfob_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
