"""The benchmark's load generator: raw asyncio protocols + httptools under uvloop.

``python bench/load.py SPEC_JSON`` runs one measurement and prints its result as JSON.
Requests are pre-built bytes; responses are parsed by httptools and only their status
(and, for SSE, body arrival) is looked at. The modes:

- ``http``: ``connections`` keep-alive connections, each sending ``request`` back to back
  for ``warmup`` + ``duration`` seconds; only requests that complete inside the measured
  window count. A response whose status is not ``expect``, a dropped connection or a
  request still unanswered ``grace`` seconds after the window is an error.
- ``sse``: ``streams`` connections send the SSE ``request`` at the same moment, ``waves``
  times; per stream it records the first body byte after the request was sent, the
  largest gap between body arrivals (the wait for the first one included), and the
  events received. A stall is a gap above ``stall_gap`` seconds, a missing event, a
  non-200 status or a stream not finished within ``timeout`` seconds.
- ``mint_call``: like ``http``, but each request is a pair: ``request`` mints a lease
  (201, its body read for the token), then ``call`` (with ``{lease}`` in place of the
  token) goes through the proxy with it; the pair's time is one request, the call's
  status is judged against ``expect``.
- ``pool_call``: like ``mint_call``, but ``request`` is a batch mint (``count``) whose
  leases are used one per call until they run out, as ``keyfob.sdk.LeaseAuth`` does;
  each call is one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httptools
import uvloop


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean (nearest rank) of ``values``, ``None`` when empty."""
    if not values:
        return {k: None for k in ("p50", "p90", "p99", "p999", "max", "mean")}
    ordered = sorted(values)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return ordered[min(last, round(q * last))]

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_turn = itertools.count()


def _port(spec: dict[str, Any]) -> int:
    """The port of the next connection: ``port``, or round robin over ``ports`` (several
    keyfob nodes behind no load balancer: the clients spread themselves)."""
    ports = spec.get("ports") or [spec["port"]]
    return int(ports[next(_turn) % len(ports)])


async def _connect(
    spec: dict[str, Any], factory: Callable[[], asyncio.Protocol], count: int
) -> list[Any]:
    loop = asyncio.get_running_loop()
    pairs = await asyncio.gather(
        *(loop.create_connection(factory, spec["host"], _port(spec)) for _ in range(count))
    )
    return [protocol for _, protocol in pairs]


# -- http: requests back to back ---------------------------------------------------------


class HttpRun:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.request = spec["request"].encode("latin-1")
        self.expect = int(spec["expect"])
        self.latencies: list[int] = []
        self.completed = 0  # warm-up and late answers included, for CPU per request
        self.errors: Counter[str] = Counter()
        self.warm_end = 0
        self.deadline = 0

    def in_window(self, now: int) -> bool:
        return self.warm_end <= now <= self.deadline

    def record(self, status: int, sent: int, now: int) -> None:
        self.completed += 1
        if not self.in_window(now):
            return
        if status == self.expect:
            self.latencies.append(now - sent)
        else:
            self.errors[f"status {status}"] += 1

    def error(self, kind: str) -> None:
        if self.in_window(time.perf_counter_ns()):
            self.errors[kind] += 1


class HttpClient(asyncio.Protocol):
    """One keep-alive connection sending the same request back to back."""

    def __init__(self, run: HttpRun) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.sent = 0
        self.in_flight = False
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _nodelay(transport)

    def send(self) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent = time.perf_counter_ns()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.in_flight = False
            self.run.error("unparsable response")
            self._end("error")

    def on_message_complete(self) -> None:
        now = time.perf_counter_ns()
        self.in_flight = False
        self.run.record(self.parser.get_status_code(), self.sent, now)
        if now >= self.run.deadline:
            self._end("deadline")
        elif not self.parser.should_keep_alive():
            self._end("closed")
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.run.error("connection dropped")
        self._end("closed")

    def _end(self, why: str) -> None:
        if not self.ended.done():
            self.ended.set_result(why)
        if self.transport is not None and why != "deadline":
            self.transport.close()


class MintCallClient(HttpClient):
    """A fresh single-use lease per call, as the SDK does it: mint, then call with it."""

    def __init__(self, run: HttpRun) -> None:
        super().__init__(run)
        self.body = bytearray()
        self.minting = True
        self.call = str(run.spec["call"])

    def send(self) -> None:
        self.minting = True
        self.body.clear()
        super().send()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if not self.minting:
            super().on_message_complete()
            return
        status = self.parser.get_status_code()
        try:
            token = json.loads(bytes(self.body))["token"] if status == 201 else None
        except (ValueError, KeyError):
            token = None
        if token is None:
            # The mint failed: counted as this pair's status.
            super().on_message_complete()
            return
        self.minting = False
        assert self.transport is not None
        self.transport.write(self.call.replace("{lease}", token).encode("latin-1"))


class PoolCallClient(MintCallClient):
    """A fresh single-use lease per call from a pool minted ``count`` at a time, as
    ``keyfob.sdk.LeaseAuth`` does it: ``request`` is the batch mint, sent when the pool
    is empty, and its time counts in the call that found the pool empty."""

    def __init__(self, run: HttpRun) -> None:
        super().__init__(run)
        self.pool: list[str] = []

    def send(self) -> None:
        if not self.pool:
            super().send()
            return
        assert self.transport is not None
        self.minting = False
        self.in_flight = True
        self.body.clear()
        self.sent = time.perf_counter_ns()
        self.transport.write(self.call.replace("{lease}", self.pool.pop()).encode("latin-1"))

    def on_message_complete(self) -> None:
        if not self.minting:
            HttpClient.on_message_complete(self)
            return
        try:
            leases = json.loads(bytes(self.body))["leases"]
            self.pool = [lease["token"] for lease in leases]
        except (ValueError, KeyError, TypeError):
            self.pool = []
        if self.parser.get_status_code() != 201 or not self.pool:
            HttpClient.on_message_complete(self)  # the mint failed: this call's status
            return
        self.minting = False
        assert self.transport is not None
        self.transport.write(self.call.replace("{lease}", self.pool.pop()).encode("latin-1"))


CLIENTS: dict[str, type[HttpClient]] = {"mint_call": MintCallClient, "pool_call": PoolCallClient}


def _client_kind(spec: dict[str, Any]) -> type[HttpClient]:
    return CLIENTS.get(spec["mode"], HttpClient)


async def _http_client(run: HttpRun, first: HttpClient) -> None:
    """Keep one connection busy until the deadline, reconnecting if the server closes it."""
    client = first
    while True:
        client.send()
        why = await client.ended
        if why == "deadline" or time.perf_counter_ns() >= run.deadline:
            if client.transport is not None:
                client.transport.close()
            return
        client = await _reconnect(run)
        if client is None:
            return


async def _reconnect(run: HttpRun) -> HttpClient | None:
    while time.perf_counter_ns() < run.deadline:
        try:
            [client] = await _connect(run.spec, lambda: _client_kind(run.spec)(run), 1)
            return client
        except OSError:
            run.error("connect failed")
            await asyncio.sleep(0.01)
    return None


async def run_http(spec: dict[str, Any]) -> dict[str, Any]:
    run = HttpRun(spec)
    clients = await _connect(spec, lambda: _client_kind(spec)(run), int(spec["connections"]))
    start = time.perf_counter_ns()
    run.warm_end = start + int(float(spec["warmup"]) * 1e9)
    run.deadline = run.warm_end + int(float(spec["duration"]) * 1e9)
    tasks = [asyncio.ensure_future(_http_client(run, c)) for c in clients]
    _, pending = await asyncio.wait(
        tasks, timeout=float(spec["warmup"]) + float(spec["duration"]) + float(spec["grace"])
    )
    for task in pending:
        run.errors["no answer (timeout)"] += 1
        task.cancel()
    window = (run.deadline - run.warm_end) / 1e9
    done = len(run.latencies)
    errors = sum(run.errors.values())
    return {
        "mode": "http",
        "connections": len(clients),
        "window_s": window,
        "requests": done,
        "completed_total": run.completed,
        "rps": done / window,
        "errors": errors,
        "error_kinds": dict(run.errors),
        "error_rate": errors / (done + errors) if done + errors else 0.0,
        "latency_ms": percentiles([ns / 1e6 for ns in run.latencies]),
    }


# -- sse: many streams at once -----------------------------------------------------------


class SseStream(asyncio.Protocol):
    """One keep-alive connection that reads an SSE response per wave."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.open = True
        self._reset()

    def _reset(self) -> None:
        self.sent = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self.max_gap = 0.0
        self.events = 0
        self.tail = b""
        self.status: int | None = None
        self.complete = False
        self.finished: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def begin(self) -> None:
        self._reset()
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.status = -1
            assert self.transport is not None
            self.transport.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - (self.sent if self.last is None else self.last))
        if self.first is None:
            self.first = now
        self.last = now
        self.events += (self.tail + body).count(b"\n\n")
        self.tail = body[-1:]

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.finished.done():
            self.finished.set_result(True)
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.finished.done():
            self.finished.set_result(False)


class SseRun:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.request = spec["request"].encode("latin-1")
        self.events = int(spec["events"])
        self.first_bytes: list[float] = []
        self.reasons: Counter[str] = Counter()
        self.streams = 0
        self.stalls = 0
        self.max_gap = 0.0
        self.received = 0

    def judge(self, stream: SseStream) -> None:
        """Count one finished (or abandoned) stream."""
        self.streams += 1
        self.received += stream.events
        self.max_gap = max(self.max_gap, stream.max_gap)
        if stream.first is not None:
            self.first_bytes.append((stream.first - stream.sent) * 1000)
        why = None
        if stream.status != 200:
            why = f"status {stream.status}"
        elif not stream.complete:
            why = "not finished in time"
        elif stream.events < self.events:
            why = "missing events"
        elif stream.max_gap > float(self.spec["stall_gap"]):
            why = "gap over the limit"
        if why:
            self.stalls += 1
            self.reasons[why] += 1


async def _sse_client(run: SseRun, stream: SseStream, delay: float) -> None:
    """One connection reading ``waves`` streams one after another, after ``delay``."""
    await asyncio.sleep(delay)
    for wave in range(int(run.spec["waves"])):
        if not stream.open:
            [stream] = await _connect(run.spec, lambda: SseStream(run.request), 1)
        stream.begin()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stream.finished), float(run.spec["timeout"]))
        run.judge(stream)
        if not stream.complete and stream.transport is not None:
            stream.transport.close()
            stream.open = False
        if wave + 1 < int(run.spec["waves"]):
            # A random pause, so stream starts never line up with a timer in the server.
            await asyncio.sleep(random.uniform(0, 0.01))
    if stream.transport is not None:
        stream.transport.close()


async def run_sse(spec: dict[str, Any]) -> dict[str, Any]:
    run = SseRun(spec)
    count = int(spec["streams"])
    streams: list[SseStream] = await _connect(spec, lambda: SseStream(run.request), count)
    # Starts spread over ``stagger`` seconds: streams held together, not opened in a burst.
    stagger = float(spec.get("stagger", 0))
    await asyncio.gather(
        *(_sse_client(run, stream, stagger * i / count) for i, stream in enumerate(streams))
    )
    return {
        "mode": "sse",
        "streams": count,
        "waves": int(spec["waves"]),
        "events_expected": count * run.events * int(spec["waves"]),
        "events_received": run.received,
        "stalls": run.stalls,
        "stall_kinds": dict(run.reasons),
        "max_gap_ms": run.max_gap * 1000,
        "first_byte_ms": percentiles(run.first_bytes),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    runner = run_sse if spec["mode"] == "sse" else run_http
    result = uvloop.run(runner(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
