"""X.509 recipes, all ECDSA P-256 / SHA-256 through ``cryptography.x509``: keyfob's
certificate authority (a CA certificate and key, leaf certificates for one host each)
and the self-signed listener certificate of ``keyfob init --self-signed``.

Knows nothing of where a key is kept: callers seal the CA key (``envelope.seal``) and
hand it back as DER to sign with.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Clocks of clients and keyfob disagree a little; a leaf valid from a few minutes back
# is not refused by a client that runs behind.
_BACKDATE = datetime.timedelta(minutes=5)


def new_ca(common_name: str, now: datetime.datetime, days: int) -> tuple[bytes, bytes]:
    """A self-signed CA that may sign server certificates only: ``(cert PEM, key DER)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), der


def leaf(
    ca_pem: bytes, ca_key_der: bytes, host: str, now: datetime.datetime, hours: int
) -> tuple[bytes, bytes]:
    """A server certificate for ``host`` (its only SAN), signed by the CA: ``(cert PEM,
    key PEM)`` — the PEM pair ``ssl`` loads."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_der_private_key(ca_key_der, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + datetime.timedelta(hours=hours), ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def self_signed(hosts: list[str], *, days: int, now: datetime.datetime) -> tuple[bytes, bytes]:
    """A listener certificate for ``hosts`` (its SANs), signing itself: ``(cert PEM,
    unencrypted PKCS#8 key PEM)``. For a first run only (``keyfob init --self-signed``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(host: str) -> x509.GeneralName:
    """An address SAN for an IP literal, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def not_after(cert_pem: bytes) -> datetime.datetime:
    """When a PEM certificate stops being valid."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def fingerprint(cert_pem: bytes) -> str:
    """The certificate's SHA-256 fingerprint, hex."""
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex()
