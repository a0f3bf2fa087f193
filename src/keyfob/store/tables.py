"""Table definitions (SQLAlchemy Core). Schema changes go through an Alembic migration.

Timestamps are RFC 3339 text with a ``Z`` (sortable, identical on every backend);
JSON is canonical text. No column ever holds a secret value: values exist here only
as AES-GCM ciphertext, tokens only as HMAC digests.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

secret_sets = Table(
    "secret_sets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("environment", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("labels", Text, nullable=False),
    Column("profile", Text, nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("deleted_at", String(32), nullable=True),
    Column("exported_at", String(32), nullable=True),
    UniqueConstraint("provider", "environment", "name", name="uq_secret_sets_path"),
)

secret_versions = Table(
    "secret_versions",
    metadata,
    Column(
        "set_id",
        String(32),
        ForeignKey("secret_sets.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True),
    Column("created_at", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", String(16), nullable=False),
    Column("rollback_of", Integer, nullable=True),
    Column("keys", Text, nullable=False),
    Column("kek_term", Integer, nullable=False),
    Column("wrapped_dek", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Index("ix_secret_versions_kek_term", "kek_term"),
)

kek_terms = Table(
    "kek_terms",
    metadata,
    Column("term", Integer, primary_key=True, autoincrement=False),
    Column("wrapped", LargeBinary, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("retired_at", String(32), nullable=True),
)

keyring_meta = Table(
    "keyring_meta",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", String(32), nullable=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("ts", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_ts", "ts"),
    # migration 0006d: newest-first pages of one actor, action or target (seq in the index)
    Index("ix_audit_events_actor_seq", "actor", "seq"),
    Index("ix_audit_events_action_seq", "action", "seq"),
    Index("ix_audit_events_target_seq", "target", "seq"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
)

# -- agents, grants, leases (migration 0002) ------------------------------------------
# No foreign keys to agents or grants: their ids stay meaningful in lease and audit
# history after an agent is deleted or a grant revoked.

agents = Table(
    "agents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("disabled_at", String(32), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", String(32), nullable=False),
    # Hosts outside the agent's sets, through the forward proxy: "tunnel" or "deny" (0005f).
    Column("egress", String(16), nullable=False, server_default="tunnel"),
    # migration 0005s: comma-separated CIDRs the agent may connect from; NULL: anywhere.
    Column("allowed_networks", Text, nullable=True),
    Column("client_cert_sha256", String(64), nullable=True),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), nullable=False),
    Column("set_id", String(32), nullable=False),
    Column("set_path", String(200), nullable=False),
    Column("keys", Text, nullable=True),
    Column("actions", Text, nullable=False),
    Column("not_before", String(32), nullable=True),
    Column("expires_at", String(32), nullable=True),
    Column("scopes", Text, nullable=False),
    Column("max_lease_ttl", Integer, nullable=False),
    Column("max_lease_uses", Integer, nullable=True),
    Column("rate_limit", Integer, nullable=True),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False),
    Column("rate_window", BigInteger, nullable=False),
    Column("rate_count", Integer, nullable=False),
    Column("methods", Text, nullable=True),
    Column("paths", Text, nullable=True),
    Column("approval", String(16), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Column("budgets", Text, nullable=True),  # migration 0005b
    Index("ix_grants_agent", "agent_id"),
    Index("ix_grants_set", "set_id"),
)

leases = Table(
    "leases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("agent_id", String(32), nullable=False),
    Column("grant_id", String(32), nullable=False),
    Column("set_id", String(32), nullable=False),
    Column("set_path", String(200), nullable=False),
    Column("actions", Text, nullable=False),
    Column("keys", Text, nullable=True),
    Column("scope", String(16), nullable=False),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Column("revoke_reason", String(64), nullable=True),
    # When the current term of a renewed workflow lease began (``POST /v1/me/leases/…/renew``).
    Column("renewed_at", String(32), nullable=True),
    Column("budgets", Text, nullable=True),  # migration 0005b
    Index("ix_leases_agent", "agent_id"),
    Index("ix_leases_grant", "grant_id"),
    Index("ix_leases_set", "set_id"),
    # migration 0007l: leases past their retention are found by expiry, not by a scan
    Index("ix_leases_expires", "expires_at"),
)

lease_requests = Table(
    "lease_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), nullable=False),
    Column("grant_id", String(32), nullable=False),
    Column("set_path", String(200), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("ttl", Integer, nullable=False),
    Column("max_uses", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("decided_at", String(32), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("lease_id", String(32), nullable=True),
    Column("reason", String(500), nullable=True),  # migration 0005m
    Index("ix_lease_requests_status", "status"),
)


# -- dashboard users and sessions (migration 0003) ---------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("failed_count", Integer, nullable=False),
    Column("locked_until", String(32), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("disabled_at", String(32), nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Index("ix_sessions_user", "user_id"),
)

# -- sign-in limits (migration 0004) ------------------------------------------------------

# One row per typed name (``name:`` + keyed hash, for known and unknown names alike) and
# per client address (``addr:``): failures, the lock they earned, when the row is dropped.
signin_limits = Table(
    "signin_limits",
    metadata,
    Column("key", String(80), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", String(32), nullable=True),
    Column("expires_at", String(32), nullable=False),
    Index("ix_signin_limits_expires", "expires_at"),
)

# -- forward proxy (migration 0005f) ----------------------------------------------------

# keyfob's own CA: its key sealed like a secret version (AAD names "ca:<id>", version 1).
ca_certificates = Table(
    "ca_certificates",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("cert_pem", Text, nullable=False),
    Column("kek_term", Integer, nullable=False),
    Column("wrapped_dek", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("not_after", String(32), nullable=False),
    Column("retires_at", String(32), nullable=True),
)

# A multi-set lease: one credential over one workflow lease per set (``lease_ids``).
lease_bundles = Table(
    "lease_bundles",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("agent_id", String(32), nullable=False),
    Column("lease_ids", Text, nullable=False),
    Column("set_paths", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Index("ix_lease_bundles_agent", "agent_id"),
)

# -- budgets and prices (migration 0005b) --------------------------------------------------

# What a grant's or lease's budgets have taken: one row per owner (``grant:<id>`` or
# ``lease:<id>``), unit and period (``total``, ``2026-12``, ``2026-12-04``). ``used`` is in
# the unit's base (nano-dollars for usd) and includes reservations not yet settled.
budget_usage = Table(
    "budget_usage",
    metadata,
    Column("owner", String(48), primary_key=True),
    Column("unit", String(16), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# The operator's prices (USD per million tokens, decimal text), over the bundled table.
prices = Table(
    "prices",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("input", String(32), nullable=False),
    Column("output", String(32), nullable=False),
    Column("cached", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# -- credential tokens (migration 0005o) ------------------------------------------------

# One row per refreshed set (OAuth, service account): the access token keyfob minted,
# sealed like a secret version (never plaintext), the refresh claim (who is refreshing,
# until when; a conditional update makes refreshing single-flight across nodes) and the
# reconnect mark an ``invalid_grant`` leaves until the set gets a new version.
credential_tokens = Table(
    "credential_tokens",
    metadata,
    Column(
        "set_id",
        String(32),
        ForeignKey("secret_sets.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, nullable=True),
    Column("kek_term", Integer, nullable=True),
    Column("wrapped_dek", LargeBinary, nullable=True),
    Column("ciphertext", LargeBinary, nullable=True),
    Column("expires_at", String(32), nullable=True),
    Column("lifetime", Integer, nullable=True),
    Column("claim", String(32), nullable=True),
    Column("claim_until", String(32), nullable=True),
    Column("reconnect", String(200), nullable=True),
    Column("reconnect_version", Integer, nullable=True),
    Column("updated_at", String(32), nullable=False),
)

# -- audit shipping (migration 0006s) ---------------------------------------------------

# One row per shipping sink (``file``, ``syslog``, ``webhook``): the last record it has
# delivered (``seq``, ``hash``), the node that ships it (a claim held until
# ``claimed_until``, taken and renewed by conditional updates so one node ships per sink)
# and the failure it is retrying, if any (``failing_since``, ``last_error``: a class of
# error and an address, never a secret).
audit_ship_cursors = Table(
    "audit_ship_cursors",
    metadata,
    Column("sink", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", String(32), nullable=True),
    Column("failing_since", String(32), nullable=True),
    Column("last_error", String(300), nullable=True),
    Column("updated_at", String(32), nullable=False),
)

# -- rolling upgrades (migration 0006u) ------------------------------------------------------

# One row: the oldest schema revision whose code may still run on this schema. Expand
# migrations leave it; a contract migration raises it (docs/deploy.md, "Rolling upgrades").
schema_compat = Table(
    "schema_compat",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("oldest_code", String(64), nullable=False),
)

# -- OAuth connect flows (migration 0006g) ----------------------------------------------

# One row per dashboard "Connect" in progress, so the provider's callback may land on any
# node. Keyed by a digest of ``state`` (never the state itself); the flow (client secret,
# PKCE verifier, where to store the set) sealed like a secret version; the starting
# browser's nonce as a digest. Deleted when used (once) or past ``expires_at``.
oauth_flows = Table(
    "oauth_flows",
    metadata,
    Column("state_digest", String(64), primary_key=True),
    Column("browser_digest", String(64), nullable=False),
    Column("kek_term", Integer, nullable=False),
    Column("wrapped_dek", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
)
