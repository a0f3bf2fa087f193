"""Settings: one table, one prefix (``KEYFOB_``), passed explicitly to ``create_app``.

Every field's description is its documentation; ``docs/configuration.md`` lists them
all and a contract test keeps the two in sync.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYFOB_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path(".keyfob"),
        description="Directory for the SQLite database, master key file and audit checkpoint.",
    )
    database_url: str | None = Field(
        None,
        description="Database URL: `sqlite:///path` or `postgresql://user@host/db`. "
        "Default: SQLite at `<data_dir>/keyfob.db`.",
    )
    master_key_file: Path | None = Field(
        None,
        description="File holding the master key (mode 0600). Default: `<data_dir>/master.key`.",
    )
    master_key: SecretStr | None = Field(
        None,
        description="The master key itself (base64 of 32 bytes), instead of a file.",
    )
    addr: str = Field(
        "http://127.0.0.1:8200",
        description="Where CLI clients find the server.",
    )
    token: SecretStr | None = Field(
        None,
        description="Token CLI clients authenticate with (`kfo_…` operator, `kfa_…` agent).",
    )
    host: str = Field("127.0.0.1", description="Address `keyfob serve` binds.")
    port: int = Field(8200, ge=0, le=65535, description="Port `keyfob serve` binds.")
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate chain `keyfob serve` presents (HTTPS on its listener); "
        "with `KEYFOB_TLS_KEY`. Both files are read again on SIGHUP, without dropping "
        "connections. `keyfob init --self-signed` makes a pair for a first run.",
    )
    tls_key: Path | None = Field(
        None,
        description="PEM private key (unencrypted) of `KEYFOB_TLS_CERT`, mode 0600.",
    )
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA certificates that agents' TLS client certificates chain to. "
        "With it (and `KEYFOB_TLS_CERT`), keyfob asks TLS clients for a certificate "
        "(optional); an agent bound to one (`client_cert_sha256`) must present it.",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite `synchronous` pragma: NORMAL survives a killed process, "
        "FULL also survives power loss.",
    )
    max_body_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        description="Largest request body the API accepts (413 above it).",
    )
    audit_checkpoint_file: Path | None = Field(
        None,
        description="Where signed audit checkpoints are written (outside the database). "
        "Default: `<data_dir>/audit-checkpoint.json`.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )
    proxy_max_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest request body the proxy forwards upstream (413 above it).",
    )
    proxy_max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest total size of a proxied request's headers (431 above it).",
    )
    proxy_max_decompressed_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest size a compressed upstream answer may decode to while it is "
        "scrubbed (502, or the stream cut, above it).",
    )
    proxy_connect_timeout: float = Field(
        10.0, gt=0, description="Seconds the proxy waits to connect to an upstream (504 after)."
    )
    proxy_read_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds the proxy waits for the next bytes from an upstream (504 before "
        "the response starts; the stream is cut after).",
    )
    proxy_total_timeout: float = Field(
        900.0,
        gt=0,
        description="Seconds a whole proxied exchange may take, streams included.",
    )
    unknown_model_price: str = Field(
        "refuse",
        pattern=r"^(refuse|\d{1,6}(\.\d{1,9})?:\d{1,6}(\.\d{1,9})?(:\d{1,6}(\.\d{1,9})?)?)$",
        description="What a usd budget does with a model the price table does not list: "
        "`refuse` (the request is refused, budget-exceeded) or `INPUT:OUTPUT[:CACHED]` "
        "USD per million tokens to charge it at. Its tokens are metered either way.",
    )
    cache_ttl: float = Field(
        1.0,
        ge=0.1,
        le=60,
        description="PostgreSQL: while a node's LISTEN connection for other nodes' cache "
        "notices is down, it drops its caches this often (seconds), so nothing it keeps "
        "is staler than this. Ignored on SQLite.",
    )
    max_pending_requests: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Lease requests that may wait for approval per agent and per grant "
        "(429 beyond).",
    )
    upstream_ca_file: Path | None = Field(
        None,
        description="PEM file of extra CA certificates the proxy trusts for upstream TLS "
        "(on-prem upstreams, tests). The system store is always trusted.",
    )
    proxy_listen: str | None = Field(
        None,
        description="`HOST:PORT` for the forward proxy (HTTP CONNECT with TLS interception "
        "for the hosts of a caller's sets; `HTTPS_PROXY=http://keyfob:<lease>@HOST:PORT`). "
        "Default: off (`keyfob serve --forward-proxy` turns it on).",
    )
    operator_listen: str | None = Field(
        None,
        description="`HOST:PORT` serving only the operator API, dashboard and service routes "
        "(the control plane). Set with `agent_listen` to split the planes; "
        "each listener answers 404 for the other's routes.",
    )
    agent_listen: str | None = Field(
        None,
        description="`HOST:PORT` serving only the agent surface: lease mint, `/v1/me/…`, the "
        "reverse proxy and service routes (the agent plane).",
    )
    test_resolve: Annotated[list[str], NoDecode] = Field(
        [],
        description="Tests only, never in production: `HOST:PORT=ADDRESS:PORT` pairs "
        "(comma-separated) the proxy connects to instead of resolving `HOST`, as curl's "
        "`--resolve` does; the address is trusted as if public. Default: none.",
    )
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Host names (comma-separated, a port is ignored; `*` allows any) that "
        "requests may name in `Host`; others get 421. Default: `localhost`, `127.0.0.1`, "
        "`[::1]`, the bound address and the address a request arrived on, which keeps DNS "
        "rebinding away from the dashboard and the API.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        [],
        description="Addresses or CIDRs (comma-separated) of TLS-terminating proxies whose "
        "`X-Forwarded-Proto`/`X-Forwarded-For`/`Forwarded` headers are believed: then the "
        "session cookie is `Secure`, HSTS is sent and the client address is the proxy's "
        "client. Default: none (those headers are ignored).",
    )
    password_hash_time_cost: int = Field(
        3, ge=1, le=20, description="argon2 passes per dashboard password hash."
    )
    password_hash_memory_kib: int = Field(
        64 * 1024,
        ge=8,
        le=4 * 1024 * 1024,
        description="argon2 memory per dashboard password hash, in KiB (64 MiB by default; "
        "hashes run on a small worker pool, two at a time).",
    )
    # With the two above: argon2-cffi's RFC 9106 low-memory profile (argon2id, t=3, 64 MiB,
    # p=4) by default; the test suite lowers them, since it hashes hundreds of passwords.
    password_hash_parallelism: int = Field(
        4, ge=1, le=64, description="argon2 lanes per dashboard password hash."
    )

    @field_validator("allowed_hosts", "trusted_proxies", "test_resolve", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError("each entry must be an IP address or a CIDR") from None
        return value

    @field_validator("proxy_listen", "operator_listen", "agent_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @field_validator("test_resolve")
    @classmethod
    def _resolve(cls, value: list[str]) -> list[str]:
        for item in value:
            name, _, target = item.partition("=")
            split_listen(name)
            split_listen(target)
        return value

    @property
    def resolve_map(self) -> dict[tuple[str, int], tuple[str, int]]:
        """``test_resolve`` as ``(host, port) -> (address, port)``."""
        pairs = (item.partition("=") for item in self.test_resolve)
        return {
            (h.lower(), p): split_listen(target)
            for name, _, target in pairs
            for h, p in [split_listen(name)]
        }

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("KEYFOB_TLS_CERT and KEYFOB_TLS_KEY go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("KEYFOB_TLS_CLIENT_CA needs KEYFOB_TLS_CERT and KEYFOB_TLS_KEY")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'keyfob.db').resolve()}"

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def resolved_checkpoint_file(self) -> Path:
        return self.audit_checkpoint_file or self.data_dir / "audit-checkpoint.json"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as ``(host, port)``; ValueError if malformed."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)
