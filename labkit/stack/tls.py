"""The lab's own certificate authority, so a redirected hop yields no reusable secret.

Natively, every hop that carries a credential (see :class:`labkit.stack.services.declarations.Hop`'s
``tls``) is TLS from end to end: the service at the far end presents the lab's server
certificate, and the near end trusts the lab's CA and nothing else for it. Toxiproxy still
sits in the middle (it forwards TCP, so its faults work as before), but whoever repoints a
proxy at a listener of their own gets a TLS ClientHello, not a request.

:meth:`LabTLS.ensure` makes, on first use (``labkit up``), in ``<data_dir>/tls`` (0700):

- ``ca.pem``: the lab's CA certificate, which the clients trust;
- ``server.pem`` and ``server-key.pem`` (0600): the one certificate every TLS listener of
  the lab presents, for ``127.0.0.1``, ``::1`` and ``localhost``.

The CA's private key is never written anywhere: it signs the server certificate and is
dropped, so no one, not even a process of the lab's own user, can mint another certificate
that the lab's clients would trust. Lost or expired files are made afresh, CA included.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from functools import cached_property
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labkit.core.files import atomic_write, locked

TLS_DIR = "tls"
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "server.pem", "server-key.pem"
VALID_DAYS = 825  # what browsers still accept for a server certificate
RENEW_BEFORE = dt.timedelta(days=1)
NAMES = ("localhost",)
ADDRESSES = ("127.0.0.1", "::1")


class _Backend(Protocol):
    backend: str


def tls_on(config: _Backend) -> bool:
    """Whether this lab runs TLS on its credential-carrying hops: natively, yes.

    The compose backend keeps them plain inside its own network, and a remote lab's
    endpoints are the user's (docs/security.md says why and what that leaves open).
    """
    return config.backend == "native"


class LabTLS:
    """The lab's CA certificate and its server certificate and key, in one directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    def ensure(self) -> LabTLS:
        """Make the CA and the server certificate unless usable ones are there; return self."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        with locked(self.directory / ".lock"):
            if not self.usable():
                self._generate()
        return self

    def usable(self) -> bool:
        """True when the three files are there, belong together and stay valid for a while."""
        try:
            ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return False
        fresh = min(ca.not_valid_after_utc, cert.not_valid_after_utc) > _now() + RENEW_BEFORE
        return fresh and key.public_key().public_numbers() == cert.public_key().public_numbers()

    @cached_property
    def client_context(self) -> ssl.SSLContext:
        """What a client of the lab verifies its TLS listeners with: the lab's CA alone."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _generate(self) -> None:
        ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca = _ca_certificate(ca_key)
        server = _server_certificate(server_key, ca, ca_key)
        pem = serialization.Encoding.PEM
        atomic_write(self.key_file, server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        atomic_write(self.cert_file, server.public_bytes(pem))
        atomic_write(self.ca_file, ca.public_bytes(pem))  # last: its presence says the set is whole


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labkit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"labkit lab CA {uuid.uuid4().hex[:8]}")])
    public = key.public_key()
    return (_builder(name, name, public)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))


def _server_certificate(key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                        ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labkit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "labkit services")])
    names = [*(x509.DNSName(n) for n in NAMES), *(x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES)]
    public = key.public_key()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (_builder(name, ca.subject, public)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS)))
