"""A throwaway certificate authority for TLS tests: a CA and a server certificate for 127.0.0.1.

The host under test trusts the CA (SSL_CERT_FILE for a twistd subprocess, trust_root in
process); nothing here is ever trusted outside the test that made it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCA:
    ca_pem: Path  # the CA certificate: what a client trusts
    cert_pem: Path  # the server certificate (127.0.0.1, localhost), signed by the CA
    key_pem: Path  # the server's private key

    def trust_root(self):
        from twisted.internet import ssl

        return ssl.Certificate.loadPEM(self.ca_pem.read_bytes())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, issuer: x509.Name, public_key, signing_key, *extensions):
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder(
        subject_name=_name(subject),
        issuer_name=issuer,
        public_key=public_key,
        serial_number=x509.random_serial_number(),
        not_valid_before=now - datetime.timedelta(days=1),
        not_valid_after=now + datetime.timedelta(days=7),
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def make_test_ca(directory: Path) -> TestCA:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    signs_only = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    ca = _certificate(
        "withcache test CA",
        _name("withcache test CA"),
        ca_key.public_key(),
        ca_key,
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (signs_only, True),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = _certificate(
        "127.0.0.1",
        ca.subject,
        key.public_key(),
        ca_key,
        (x509.SubjectAlternativeName(san), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
    )
    pem = serialization.Encoding.PEM
    paths = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca_pem.write_bytes(ca.public_bytes(pem))
    paths.cert_pem.write_bytes(cert.public_bytes(pem))
    paths.key_pem.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
