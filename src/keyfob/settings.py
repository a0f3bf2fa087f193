"""Settings: one table, one prefix (``KEYFOB_``), passed explicitly to ``create_app``.

Every field's description is its documentation; ``docs/configuration.md`` lists them
all and a contract test keeps the two in sync.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


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
    master_key_provider: Literal["file", "env", "pkcs11"] | None = Field(
        None,
        description="What wraps the keyring: `file` (`KEYFOB_MASTER_KEY_FILE`), `env` "
        "(`KEYFOB_MASTER_KEY`) or `pkcs11` (an AES key on an HSM token, which never leaves "
        "it; needs the `hsm` extra). Default: `env` if `KEYFOB_MASTER_KEY` is set, else `file`.",
    )
    pkcs11_module: Path | None = Field(
        None,
        description="With `pkcs11`: path of the token's PKCS#11 library, e.g. "
        "`/usr/lib/softhsm/libsofthsm2.so`.",
    )
    pkcs11_token_label: str | None = Field(
        None,
        description="With `pkcs11`: label of the token that holds the wrapping key.",
    )
    pkcs11_pin: SecretStr | None = Field(
        None,
        description="With `pkcs11`: the token's user PIN (or `KEYFOB_PKCS11_PIN_FILE`; "
        "exactly one of the two). Never printed.",
    )
    pkcs11_pin_file: Path | None = Field(
        None,
        description="With `pkcs11`: file holding the user PIN (mode 0600; a trailing "
        "newline is ignored).",
    )
    pkcs11_key_label: str = Field(
        "keyfob-master",
        min_length=1,
        description="With `pkcs11`: label of the AES-256 wrapping key on the token. "
        "`keyfob init` creates it (sensitive, not extractable) if the token has none.",
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
    lease_retention_days: float = Field(
        7.0,
        ge=0,
        le=3650,
        description="Days a lease (or a multi-set lease, or a lease request) is kept after it "
        "expires, for `keyfob lease list` and the API; then the server deletes it, a lease "
        "with its budget counters (checked a minute after start and hourly, a "
        "`lease.prune` audit record per batch). Every mint and use stays in the audit "
        "log. 0 keeps leases forever.",
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

    audit_ship_file: Path | None = Field(
        None,
        description="Ship audit records, as they commit, to this JSONL file (one record per "
        "line, as `keyfob audit export` writes them; fsynced before the cursor moves). "
        "Default: off.",
    )
    audit_ship_file_max_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1024,
        description="Size at which the shipped JSONL file is rotated (`FILE` becomes "
        "`FILE.1`, `FILE.1` becomes `FILE.2`, …).",
    )
    audit_ship_file_backups: int = Field(
        5, ge=1, le=1000, description="Rotated JSONL files kept (`FILE.1` … `FILE.N`)."
    )
    audit_ship_syslog: str | None = Field(
        None,
        description="Ship audit records to syslog as RFC 5424 messages: `udp://HOST:PORT`, "
        "`tcp://HOST:PORT` (octet-counted framing, RFC 6587) or `tls://HOST:PORT` (the same "
        "framing over TLS, RFC 5425; the server's certificate is verified). Default: off.",
    )
    audit_ship_syslog_ca_file: Path | None = Field(
        None,
        description="PEM file of extra CA certificates trusted for `tls://` syslog (the "
        "system store is always trusted).",
    )
    audit_ship_syslog_facility: int = Field(
        13, ge=0, le=23, description="Syslog facility of shipped records (13: log audit)."
    )
    audit_ship_webhook: str | None = Field(
        None,
        description="Ship audit records to this `https://` URL: a JSON `POST` of "
        '`{"records": […]}` per batch; any 2xx acknowledges the batch. Default: off.',
    )
    audit_ship_webhook_ca_file: Path | None = Field(
        None,
        description="PEM file of extra CA certificates trusted for the audit webhook (the "
        "system store is always trusted).",
    )
    audit_ship_webhook_token: SecretStr | None = Field(
        None,
        description="Bearer token sent to the audit webhook (`Authorization: Bearer …`). "
        "Never logged.",
    )
    audit_ship_webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA-256 key that signs each webhook body "
        "(`X-Keyfob-Signature: sha256=<hex>`). Never logged.",
    )
    audit_ship_batch: int = Field(
        500, ge=1, le=10_000, description="Audit records shipped per batch, per sink."
    )
    audit_ship_poll: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between looks for new records (this node's commits wake "
        "shipping at once; the poll finds other nodes' records).",
    )
    audit_ship_retry_initial: float = Field(
        1.0, gt=0, le=60, description="Seconds before the first retry of a failed delivery."
    )
    audit_ship_retry_max: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest wait between retries (the wait doubles from "
        "`audit_ship_retry_initial` up to this).",
    )
    audit_ship_claim_seconds: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="How long a node's claim to ship a sink lasts without renewal; another "
        "node takes over after it lapses.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``KEYFOB_*`` variables. There is no ``.env`` file and no secrets
        directory to read, so their sources, which would read nothing, are left out: each
        still inspects every field, and without them ``Settings()`` costs half as much
        (every CLI command and server start makes one)."""
        return init_settings, env_settings

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

    @field_validator("audit_ship_syslog")
    @classmethod
    def _syslog(cls, value: str | None) -> str | None:
        if value is not None:
            scheme, sep, rest = value.partition("://")
            if not sep or scheme not in ("udp", "tcp", "tls"):
                raise ValueError("must be udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
            split_listen(rest)
        return value

    @field_validator("audit_ship_webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError("must be an https:// URL")
            if parts.username is not None or parts.password is not None:
                # Credentials go in KEYFOB_AUDIT_SHIP_WEBHOOK_TOKEN, kept out of logs.
                raise ValueError("must not hold a user name or password")
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
    digits = port.isascii() and port.isdigit()  # not "²": int() would raise
    if not sep or not host or not digits or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)
