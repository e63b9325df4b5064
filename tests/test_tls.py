"""The lab's own CA and what follows from it, without services: the files and their modes, a TLS
handshake that trusts the lab's CA and refuses another's, the hops' URLs, the data dir's modes."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from labkit.stack.backends.compose import ComposeBackend
from labkit.stack.context import LabContext
from labkit.stack.hops import HOPS, hop, hop_url
from labkit.stack.lab import Lab
from labkit.stack.secrets import make_private
from labkit.stack.services.faas import Faas
from labkit.stack.services.nodered import NodeRed
from labkit.stack.services.storage import BUCKET_TMP_DIR, Storage, StorageOut, keep_bucket_private
from labkit.stack.tls import LabTLS


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def handshake(server: LabTLS, client: ssl.SSLContext) -> str:
    """Run a TLS handshake over a socket pair; return the client's peer subject or the error."""
    left, right = socket.socketpair()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.cert_file, server.key_file)

    def serve() -> None:
        try:
            with server_context.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(left, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"x")
            return "verified"
    except ssl.SSLCertVerificationError as e:
        return f"refused: {e.verify_message}"
    finally:
        left.close()
        right.close()
        thread.join(5)


@pytest.fixture()
def ctx(tmp_path: Path) -> LabContext:
    return LabContext.from_env(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", backend="native")


def test_the_lab_makes_its_ca_and_certificate_private_and_keeps_no_ca_key(ctx: LabContext) -> None:
    tls = ctx.tls
    assert mode(tls.directory) == 0o700
    assert {p.name: mode(p) for p in tls.directory.iterdir()} == {
        ".lock": 0o600, "ca.pem": 0o600, "server.pem": 0o600, "server-key.pem": 0o600}
    assert [p.name for p in tls.directory.iterdir() if b"PRIVATE KEY" in p.read_bytes()] == ["server-key.pem"]
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_ensure_keeps_a_usable_set_and_remakes_a_broken_one(ctx: LabContext) -> None:
    tls = ctx.tls
    ca = tls.ca_file.read_bytes()
    assert LabTLS(tls.directory).ensure().ca_file.read_bytes() == ca
    tls.key_file.write_bytes(b"not a key")
    assert LabTLS(tls.directory).ensure().ca_file.read_bytes() != ca
    assert LabTLS(tls.directory).usable()


def test_a_client_of_the_lab_trusts_its_ca_and_no_other(ctx: LabContext, tmp_path: Path) -> None:
    ours, theirs = ctx.tls, LabTLS(tmp_path / "another-lab").ensure()
    assert handshake(ours, ours.client_context) == "verified"
    assert handshake(theirs, ours.client_context).startswith("refused")
    # nor does a client that trusts the system's roots trust the lab
    assert handshake(ours, ssl.create_default_context()).startswith("refused")


def test_native_hops_that_carry_credentials_are_https_and_compose_stays_plain(ctx: LabContext,
                                                                               tmp_path: Path) -> None:
    secure = {h.name for h in HOPS if h.tls}
    assert {h.name: hop_url(ctx.config, h.name).split(":")[0] for h in HOPS} == {
        h.name: "https" if h.name in secure else "http" for h in HOPS}
    assert hop("store-webhook").upstream_for(ctx.config) == "nodered-tls"
    compose = LabContext.from_env(data_dir=tmp_path / "compose", backend="compose")
    assert compose.tls is None and compose.verify is True
    assert all(ComposeBackend(compose).hop_url(h.name).startswith("http://") for h in HOPS)
    assert hop("store-webhook").upstream_for(compose.config) == "nodered"


def test_the_services_present_the_lab_certificate_and_trust_its_ca(ctx: LabContext) -> None:
    tls = ctx.tls
    for gateway in (Storage(ctx), StorageOut(ctx)):
        command = gateway.command()
        assert command[command.index("--cert") + 1] == str(tls.cert_file)
        assert gateway.environment()["SSL_CERT_FILE"] == str(tls.ca_file)
        assert gateway.endpoint().startswith("https://")
    assert StorageOut(ctx).webhook_url().startswith("https://")
    faas = Faas(ctx)
    assert "--tls-cert" in faas.command() and faas.environment()["SSL_CERT_FILE"] == str(tls.ca_file)
    env = NodeRed(ctx).environment()
    assert env["NODE_EXTRA_CA_CERTS"] == str(tls.ca_file)
    assert env["LABKIT_FAAS_URL"].startswith("https://") and env["LABKIT_S3_URL"].startswith("https://")
    assert NodeRed(ctx).endpoint().startswith("http://")  # browsers and labkit keep the plain port
    assert Lab(ctx).verify is tls.client_context


def test_make_private_takes_group_and_other_bits_off_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "s3" / "dit247").mkdir(parents=True)
    obj = data / "s3" / "dit247" / "cat.png"
    obj.write_bytes(b"png")
    for path, bits in ((data, 0o755), (data / "s3", 0o755), (obj, 0o644)):
        path.chmod(bits)
    (data / "link").symlink_to("/etc/hostname")
    assert set(make_private(data)) == {data, data / "s3", data / "s3" / "dit247", obj}
    assert (mode(data), mode(data / "s3"), mode(obj)) == (0o700, 0o700, 0o600)
    assert make_private(data) == []


def test_a_bucket_gets_its_temp_dir_so_its_first_object_is_private(tmp_path: Path) -> None:
    (tmp_path / "dit247").mkdir()
    keep_bucket_private(tmp_path, "dit247")
    keep_bucket_private(tmp_path, "missing")
    assert mode(tmp_path / "dit247" / BUCKET_TMP_DIR) == 0o700 and not (tmp_path / "missing").exists()
