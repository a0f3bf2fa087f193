"""FastAPI's own OpenTelemetry stays off in keyfob's apps, even when the process has an
SDK configured (as auto-instrumentation does): FastAPI would otherwise record an
unhandled exception with its message and stack trace, which keyfob's 500 handler never
logs, and the query string. keyfob reports through its metrics and audit log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import _logs, metrics, trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal

from tests.conftest import CANARY, make_set


def providers(asked: list[str]) -> tuple[Any, Any, Any]:
    """Configured (non-proxy) providers that note each tracer, meter and logger asked for."""

    # Not the API's NoOp providers: FastAPI takes those for "off".
    class Tracers(trace.TracerProvider):
        def get_tracer(
            self, instrumenting_module_name: str, *args: Any, **kwargs: Any
        ) -> trace.Tracer:
            asked.append(f"tracer {instrumenting_module_name}")
            return trace.NoOpTracer()

    class Meters(metrics.MeterProvider):
        def get_meter(self, name: str, *args: Any, **kwargs: Any) -> metrics.Meter:
            asked.append(f"meter {name}")
            return metrics.NoOpMeter(name)

    class Loggers(_logs.LoggerProvider):
        def get_logger(self, name: str, *args: Any, **kwargs: Any) -> _logs.Logger:
            asked.append(f"logger {name}")
            return _logs.NoOpLogger(name)

    return Tracers(), Meters(), Loggers()


@pytest.fixture
def otel_configured(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The process-wide providers an OpenTelemetry SDK would set, for this test only; what
    FastAPI asked them for."""
    asked: list[str] = []
    tracers, meters, loggers = providers(asked)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", tracers)
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", meters)
    monkeypatch.setattr(logs_internal, "_LOGGER_PROVIDER", loggers)
    return asked


async def test_a_plain_fastapi_app_would_be_traced(otel_configured: list[str]) -> None:
    """The set-up is what FastAPI takes for a configured SDK: a default app records."""
    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, int]:
        return {"x": 1}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/x?q=1")).status_code == 200
    assert sorted(otel_configured) == ["logger fastapi", "meter fastapi", "tracer fastapi"]


async def test_keyfobs_api_and_dashboard_record_nothing(
    otel_configured: list[str], client: httpx.AsyncClient
) -> None:
    assert (await client.get("/v1/secret-sets?limit=5")).status_code == 200
    created = await client.post("/v1/secret-sets", json=make_set())
    assert created.status_code == 201
    # A validation error holding a value, a keyfob error, a conflict: none is recorded.
    bad = await client.post("/v1/secret-sets", json=make_set(entries={"no spaces": CANARY}))
    assert bad.status_code == 422
    assert (await client.get("/v1/secret-sets/openai/prod/absent")).status_code == 404
    assert (await client.post("/v1/secret-sets", json=make_set())).status_code == 409
    assert (await client.get("/ui/login")).status_code == 200
    assert otel_configured == []
