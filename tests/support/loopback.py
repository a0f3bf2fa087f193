"""The tests' own one-off HTTP calls to loopback servers, without a CA bundle load each.

``httpx.get``, ``httpx.post`` and every ``httpx.Client`` build an SSL context from
certifi's CA bundle unless given one: ~20 ms of CPU each, even for a plain-HTTP URL. The
suite makes thousands of such calls (health polls while a server starts, a request per
client in the race tests): about a tenth of its CPU went there. These helpers share one
context, built once per process. The clients under test (the CLI's, the SDK's, the MCP
server's) still build their own; tests of TLS trust pass their own ``verify``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

TLS = httpx.create_ssl_context()


def request(method: str, url: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, **kw)


def get(url: str, **kw: Any) -> httpx.Response:
    return request("GET", url, **kw)


def post(url: str, **kw: Any) -> httpx.Response:
    return request("POST", url, **kw)


def head(url: str, **kw: Any) -> httpx.Response:
    return request("HEAD", url, **kw)


@contextmanager
def stream(method: str, url: str, **kw: Any) -> Iterator[httpx.Response]:
    with httpx.stream(method, url, verify=TLS, **kw) as response:
        yield response
