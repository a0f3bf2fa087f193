"""The proxy route's entry in ``/openapi.json``: it is served beside FastAPI, not by it."""

from __future__ import annotations

from typing import Any

from keyfob.proxy.app import METHODS

PATH = "/proxy/{provider}/{environment}/{name}/{path}"

_PROBLEM = {"application/problem+json": {"schema": {"type": "object"}}}
_ERRORS = {
    "400": "bad path, query or framing (nothing consumed)",
    "401": "missing, malformed or unknown lease",
    "403": "the lease or grant refuses this use; `reason` says why",
    "413": "request body over KEYFOB_PROXY_MAX_BODY_BYTES",
    "429": "the grant's rate limit is reached; see Retry-After",
    "431": "request headers over KEYFOB_PROXY_MAX_HEADER_BYTES",
    "502": "the upstream could not be reached, was refused, or failed; `reason` says which",
    "503": "the audit record could not be written: nothing was sent upstream",
    "504": "the upstream did not answer in time",
}


def _operation(method: str) -> dict[str, Any]:
    return {
        "tags": ["proxy"],
        "summary": "Send a request to the secret set's upstream with its credential injected",
        "description": (
            "The lease comes in `X-Keyfob-Lease`, `Authorization: Bearer` (or a SigV4 "
            "`Credential=`, for AWS SDKs) or `x-api-key`. keyfob removes every agent "
            "credential, injects the set's as its profile says, forwards to "
            "`{base_url}/{path}` and streams the answer back, scrubbed of the set's values. "
            "See docs/proxy.md."
        ),
        "operationId": f"proxy_{method.lower()}",
        "parameters": [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in ("provider", "environment", "name", "path")
        ],
        "responses": {
            "default": {"description": "the upstream's answer, relayed as it streams"},
            **{code: {"description": why, "content": _PROBLEM} for code, why in _ERRORS.items()},
        },
    }


def describe(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the proxy route to an OpenAPI document (in place); returns it."""
    schema.setdefault("paths", {})[PATH] = {m.lower(): _operation(m) for m in sorted(METHODS)}
    return schema
