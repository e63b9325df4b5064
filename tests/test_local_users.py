"""Another local user against the lab: every hop repointed at a listener of their own.

Toxiproxy's API has no authentication, so any local user can do what these tests do: point a
hop's proxy at a listener of their own (``POST /proxies/<hop>`` with a new ``upstream``) and
see what the lab sends there. The hops that carry a credential (an S3 request signed with a
store key, the FaaS key, the webhook's token) are TLS with the lab's own CA
(:mod:`labkit.stack.tls`), so:

- a listener that only listens gets a TLS ClientHello and nothing else, and that ClientHello,
  replayed at the service, only opens a handshake whose keys the attacker does not have;
- a listener that answers TLS with a certificate of its own (an impostor) is refused by the
  hop's client before a byte of the request leaves it.

The one plain hop, ``store-kafka``, carries the store's events (bucket, key, ETag) and no
credential. docs/security.md draws the trust boundary, and what it leaves open.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from labkit.pipeline.verify import verify
from labkit.stack.hops import HOPS, hop
from labkit.stack.lab import Lab
from labkit.stack.tls import LabTLS
from tests.support import poll

pytestmark = pytest.mark.stack

RUN = uuid.uuid4().hex[:8]
TLS_HOPS = tuple(h.name for h in HOPS if h.tls)
PLAIN_HOPS = tuple(h.name for h in HOPS if not h.tls)
CAPTURE_TIMEOUT_S = 30.0
TLS_HANDSHAKE, CLIENT_HELLO = 0x16, 0x01


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Listener:
    """The attacker's listener. It records what each connection sends in its first moments:
    the raw bytes, or (as an ``impostor``, answering TLS with a certificate of its own) the
    plaintext of the request. It never answers a request."""

    impostor: ssl.SSLContext | None = None
    captures: list[bytes] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # impostor handshakes the client broke off

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        conn.settimeout(3.0)
        try:
            if self.impostor is not None:
                try:
                    conn = self.impostor.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.refused.append(str(e))
                    return
            self.captures.append(_read_a_while(conn))
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.server.close()
        self.thread.join(5)


def _read_a_while(conn: socket.socket) -> bytes:
    """What the peer sends until it waits for an answer (half a second of silence) or closes."""
    data = b""
    try:
        while len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            conn.settimeout(0.5)
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    return data


@contextmanager
def repointed(lab: Lab, name: str, listener: Listener) -> Iterator[Listener]:
    """Point hop ``name``'s proxy at ``listener`` the way an attacker would (Toxiproxy's API,
    no credentials), and put it back afterwards the way ``labkit up`` does."""
    api = lab.endpoints["toxiproxy"]
    response = httpx.post(f"{api}/proxies/{name}", json={"upstream": f"127.0.0.1:{listener.port}"}, timeout=5)
    assert response.status_code == 200, response.text  # the API let us: that is the threat
    try:
        yield listener
    finally:
        lab.backend.service("toxiproxy").on_ready()
        listener.close()


def traffic(lab: Lab, name: str) -> Callable[[], None]:
    """Something that makes the lab send a request through hop ``name``."""
    key = f"local-users/{RUN}/{name}-{uuid.uuid4().hex[:6]}.png"
    body = png()

    def upload_through_nodered() -> None:  # Node-RED stores it through client-store (and retries)
        httpx.post(f"{lab.endpoints['nodered']}/upload", params={"key": key}, content=body,
                   headers={"Content-Type": "image/png"}, timeout=60)

    def store_an_original() -> None:  # its event crosses store-kafka; Node-RED invokes (nodered-faas);
        lab.s3().put_object("dit247", key, io.BytesIO(body), len(body))  # the action reads (action-store)

    def store_an_output() -> None:  # storage-out calls the webhook through store-webhook
        lab.s3("storage-out").put_object("dit247c", key.replace(".png", ".jpg"), io.BytesIO(body), len(body))

    return {"client-store": upload_through_nodered, "store-webhook": store_an_output}.get(name, store_an_original)


def capture(lab: Lab, name: str, listener: Listener) -> Listener:
    """Repoint ``name`` at ``listener``, make traffic on it, and wait for the first connection."""
    with repointed(lab, name, listener):
        sender = threading.Thread(target=traffic(lab, name), daemon=True)
        sender.start()
        poll(f"a connection on the repointed {name} hop", lambda: listener.captures or listener.refused,
             CAPTURE_TIMEOUT_S)
    sender.join(90)  # a retried upload gets through once the hop is back
    return listener


def impostor_context(tmp_path: Path) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 from a CA of the attacker's own."""
    theirs = LabTLS(tmp_path / "attacker-tls").ensure()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(theirs.cert_file, theirs.key_file)
    return context


def replay(lab: Lab, name: str, data: bytes) -> bytes:
    """Send ``data`` to the service at hop ``name``'s far end; return what it answers in a second."""
    port = lab.ctx.config.port(hop(name).upstream_for(lab.ctx.config))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(data)
        return _read_a_while(conn)


def secrets_in(lab: Lab, data: bytes) -> list[str]:
    """Which of the lab's credentials appear in ``data`` (their names, never their values)."""
    plain = lab.ctx.secrets.as_plain_dict()
    return [name for name, value in plain.items() if name != "nodered_user" and value.encode() in data]


def test_the_hops_that_carry_credentials_are_tls(pipe: Lab) -> None:
    assert set(TLS_HOPS) == {"client-store", "nodered-faas", "action-store", "store-webhook"}
    assert PLAIN_HOPS == ("store-kafka",)
    assert all(pipe.backend.hop_url(name).startswith("https://") for name in TLS_HOPS)


@pytest.mark.parametrize("name", TLS_HOPS)
def test_a_repointed_tls_hop_yields_a_client_hello_that_replays_to_nothing(pipe: Lab, name: str) -> None:
    listener = capture(pipe, name, Listener())
    assert listener.captures, f"{name}: no connection reached the attacker's listener"
    for data in listener.captures:
        assert data[:1] == bytes([TLS_HANDSHAKE]) and data[5:6] == bytes([CLIENT_HELLO]), (name, data[:16])
        assert secrets_in(pipe, data) == [] and b"Authorization" not in data and b"/hooks/" not in data
    answer = replay(pipe, name, listener.captures[0])
    # The service takes the replayed ClientHello as a new handshake: it answers TLS, never HTTP.
    assert answer[:1] == bytes([TLS_HANDSHAKE]) and b"HTTP/" not in answer, (name, answer[:16])


@pytest.mark.parametrize("name", TLS_HOPS)
def test_a_tls_hop_refuses_an_impostor_before_sending_its_request(pipe: Lab, name: str,
                                                                    tmp_path: Path) -> None:
    listener = capture(pipe, name, Listener(impostor=impostor_context(tmp_path)))
    assert listener.refused and listener.captures == [], (name, listener.refused, listener.captures[:1])


@pytest.mark.parametrize("name", PLAIN_HOPS)
def test_the_plain_hop_carries_no_credential(pipe: Lab, name: str) -> None:
    listener = capture(pipe, name, Listener())
    assert listener.captures and all(secrets_in(pipe, data) == [] for data in listener.captures)


def test_the_pipeline_runs_end_to_end_once_the_hops_are_back(pipe: Lab) -> None:
    assert verify(pipe)["duration_ms"] > 0


def test_labkit_up_removes_a_proxy_that_exposes_a_port_beyond_loopback(pipe: Lab) -> None:
    """A local user can still create a proxy on 0.0.0.0 (the API has no authentication); the lab
    never does, and ``labkit up`` removes one (docs/security.md: what stays open)."""
    api, nodered = pipe.endpoints["toxiproxy"], pipe.ctx.config.port("nodered")
    with socket.socket() as probe:  # a free port, for the exposing proxy
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    created = httpx.post(f"{api}/proxies", json={"name": f"expose-{RUN}", "listen": f"0.0.0.0:{port}",
                                                  "upstream": f"127.0.0.1:{nodered}", "enabled": True}, timeout=5)
    assert created.status_code == 201, created.text
    try:
        assert pipe.toxiproxy().beyond_loopback() == [f"expose-{RUN}"]
        pipe.backend.service("toxiproxy").on_ready()  # what `labkit up` does for a running Toxiproxy
        assert pipe.toxiproxy().beyond_loopback() == [] and f"expose-{RUN}" not in pipe.toxiproxy().proxies()
    finally:
        httpx.delete(f"{api}/proxies/expose-{RUN}", timeout=5)
