"""keyfob's CA: made at init (or first use), its key sealed like a secret version,
rotated with an overlap, and leaf certificates per host minted on demand and cached.

The proxy gets ready ``ssl.SSLContext`` objects from here and never sees a key.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections import OrderedDict

from keyfob import crypto, tokens
from keyfob.ca_bundle import merged_bundle
from keyfob.clock import isoformat
from keyfob.errors import ValidationFailed
from keyfob.secret import Secret
from keyfob.store import Tx
from keyfob.store import authority as sql
from keyfob.store.authority import CaRow
from keyfob.vault.context import SYSTEM, Context
from keyfob.vault.core import Core

CA_DAYS = 3650
LEAF_HOURS = 24
LEAVES_KEPT = 1024
DEFAULT_OVERLAP = 7 * 24 * 3600
CA_NAME = "keyfob forward proxy CA"
def _aad_id(ca_id: str) -> str:
    # The sealed key is bound to its CA row, as a secret version is bound to its set.
    return f"ca:{ca_id}"


class Authority:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._signing: tuple[str, bytes, Secret[bytes]] | None = None  # id, cert, key DER
        self._leaves: OrderedDict[str, tuple[ssl.SSLContext, datetime.datetime]] = OrderedDict()

    # -- the CA ----------------------------------------------------------------------

    async def create(self, ctx: Context) -> CaRow:
        """A new CA, sealed and stored, audited (``ca.create``)."""
        from keyfob.crypto import _pki  # X.509 on first use: most servers run no CA

        now = self._core.clock.now()
        cert, key = _pki.new_ca(CA_NAME, now, CA_DAYS)
        ca_id = tokens.new_id()
        async with self._core.write() as tx:
            # Under the active term as the database has it (another node may have rotated).
            await self._core.sync_terms(tx)
            sealed = crypto.seal(self._core.ring, key, set_id=_aad_id(ca_id), version=1)
            row = CaRow(
                ca_id,
                cert.decode(),
                sealed.term,
                sealed.wrapped_dek,
                sealed.ciphertext,
                isoformat(now),
                isoformat(_pki.not_after(cert)),
                None,
            )
            await sql.insert_ca(tx.conn, row)
            await self._core.record(
                tx, ctx, "ca.create", f"ca:{ca_id}", details={"fingerprint": _pki.fingerprint(cert)}
            )
            tx.announce("ca")
        return row

    async def current(self) -> list[CaRow]:
        """The CAs clients should trust now, newest (the signing one) first; made if none."""
        now = self._core.now()
        async with self._core.db.read() as conn:
            rows = [
                r for r in await sql.list_ca(conn) if r.retires_at is None or r.retires_at > now
            ]
        if not rows:
            rows = [await self.create(SYSTEM)]
        # The signing CA first: the one not retiring, then the newest.
        rows.sort(key=lambda r: (r.retires_at is None, r.created_at), reverse=True)
        return rows

    async def rotate(self, ctx: Context, overlap: int = DEFAULT_OVERLAP) -> CaRow:
        """A new signing CA; the old ones stay trusted for ``overlap`` seconds."""
        if not isinstance(overlap, int) or overlap < 0:
            raise ValidationFailed(
                "overlap: seconds, at least 0", errors=[{"loc": ["overlap"], "msg": "≥ 0"}]
            )
        old = await self.current()
        row = await self.create(ctx)
        until = isoformat(self._core.clock.now() + datetime.timedelta(seconds=overlap))
        async with self._core.write() as tx:
            for previous in old:
                await sql.retire_ca(tx.conn, previous.id, until)
            await self._core.record(
                tx,
                ctx,
                "ca.rotate",
                f"ca:{row.id}",
                details={"retired": [r.id for r in old], "trusted_until": until},
            )
            tx.announce("ca")  # every node signs with the new CA from now on
        self.reset()
        return row

    async def certificate_pem(self) -> str:
        """Every CA certificate clients should trust now (PEM, signing one first)."""
        return "".join(r.cert_pem for r in await self.current())

    async def bundle_pem(self) -> str:
        """The system's roots plus keyfob's CA (``merged_bundle``)."""
        return merged_bundle(await self.certificate_pem())

    async def rewrap(self) -> int:
        """Move the CA keys' DEKs to the active KEK term (``keys rewrap`` calls this)."""
        async with self._core.write() as tx:
            return await self.rewrap_in(tx)

    async def rewrap_in(self, tx: Tx) -> int:
        """``rewrap`` inside the caller's transaction."""
        moved = 0
        term = self._core.ring.active_term
        for ca_id, old_term, wrapped in await sql.ca_on_old_terms(tx.conn, term):
            await self._core.ensure_term(wrapped)
            new_term, rewrapped = crypto.rewrap(
                self._core.ring, wrapped, set_id=_aad_id(ca_id), version=1
            )
            await sql.set_ca_wrapped(tx.conn, ca_id, old_term, new_term, rewrapped)
            moved += 1
        return moved

    def reset(self) -> None:
        """Forget the signing CA and every leaf (a CA was made or rotated, maybe elsewhere)."""
        self._signing = None
        self._leaves.clear()

    # -- leaves ----------------------------------------------------------------------

    async def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf for ``host``, cached until near expiry."""
        now = self._core.clock.now()
        cached = self._leaves.get(host)
        if cached is not None and cached[1] > now:
            self._leaves.move_to_end(host)
            return cached[0]
        from keyfob.crypto import _pki  # X.509 on first use, as in create

        _, ca_cert, key = await self._signer()
        cert, leaf_key = _pki.leaf(ca_cert, key.reveal(), host, now, LEAF_HOURS)
        context = _server_context(cert, leaf_key)
        # Renewed an hour before it lapses, so no client sees a leaf about to expire.
        self._leaves[host] = (context, now + datetime.timedelta(hours=LEAF_HOURS - 1))
        while len(self._leaves) > LEAVES_KEPT:
            self._leaves.popitem(last=False)
        return context

    async def _signer(self) -> tuple[str, bytes, Secret[bytes]]:
        if self._signing is None:
            row = (await self.current())[0]
            await self._core.ensure_term(row.wrapped_dek)
            sealed = crypto.Sealed(row.kek_term, row.wrapped_dek, row.ciphertext)
            der = crypto.open(self._core.ring, sealed, set_id=_aad_id(row.id), version=1)
            self._signing = (row.id, row.cert_pem.encode(), Secret(der))
        return self._signing


def _server_context(cert: bytes, key: bytes) -> ssl.SSLContext:
    """``ssl`` loads a certificate chain only from files: a private temporary directory
    holds the leaf for the moment it is loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory(prefix="keyfob-leaf-") as directory:
        path = os.path.join(directory, "leaf.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key + cert)
        context.load_cert_chain(path)
    return context
