"""The token endpoint call for refreshed credentials, through the proxy's egress guard.

The vault decides what to ask (``vault.token_grants``); this module only sends it, on
the same sessions the proxy uses, so a token endpoint meets the upstream's address rules
(no private, loopback or metadata address unless the profile allows private upstreams,
resolved once, no redirects, no environment proxies).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

import aiohttp
import yarl

from keyfob.errors import CredentialRefreshFailed
from keyfob.proxy import egress
from keyfob.vault.token_grants import EndpointFailed, TokenAnswer, TokenCall

log = logging.getLogger("keyfob.refresh")

MAX_ANSWER = 64 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5, sock_read=10)


class TokenFetcher:
    """Sends ``TokenCall``s; retryable failures are ``EndpointFailed``."""

    def __init__(self, egress_: egress.Egress, timeout: aiohttp.ClientTimeout = TIMEOUT) -> None:
        self._egress = egress_
        self._timeout = timeout

    async def __call__(self, call: TokenCall) -> TokenAnswer:
        host = yarl.URL(call.url).host or ""
        try:
            egress.check_literal(host, call.allow_private)
        except egress.DestinationRefused as refused:
            raise _refused(refused) from None
        session = self._egress.session(call.allow_private)
        headers = dict(call.headers)
        body = None
        if call.form:
            # The egress sessions add no Content-Type of their own.
            body = urlencode(dict(call.form)).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        try:
            async with session.post(
                call.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                raw = await response.content.read(MAX_ANSWER + 1)
                status = response.status
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, egress.DestinationRefused):
                raise _refused(exc.os_error) from None
            raise EndpointFailed("dns") from None
        except egress.DestinationRefused as refused:
            raise _refused(refused) from None
        except aiohttp.ClientConnectorError:
            # Nothing reached the endpoint: safe to try again.
            raise EndpointFailed("connect") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The endpoint may have spent a one-time refresh token: no retry, no reuse.
            log.warning("token endpoint call failed: %s", type(exc).__name__)
            raise CredentialRefreshFailed(
                "the token endpoint did not answer in time", reason="endpoint_timeout"
            ) from None
        if len(raw) > MAX_ANSWER:
            raise CredentialRefreshFailed(
                "the token endpoint's answer is too large", reason="answer"
            )
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return TokenAnswer(status, parsed if isinstance(parsed, dict) else {})


def _refused(refused: egress.DestinationRefused) -> CredentialRefreshFailed:
    return CredentialRefreshFailed(
        "the token endpoint's address is not allowed (private, loopback, link-local or "
        "metadata) for this profile",
        reason="destination_refused",
        address_class=refused.reason,
    )
