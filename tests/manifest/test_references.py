"""Reference images: local paths, s3 via an injected getter, and URLs over real loopback HTTP(S) servers."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.errors import InputError, StorageError
from pipeline.references import (
    ReferenceFetcher,
    address_problem,
    fetch_reference_bytes,
    resolve_reference,
)

from .conftest import png_bytes

PNG = png_bytes()


# -- a small image server on loopback ------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    sni: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server_version = "img"
    state: Server
    stop: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, ctype: str, body: bytes, *, length: bool = True, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.state.requests.append((url.path, self.headers.get("Host", "")))
        route = url.path
        if route == "/ok.png":
            self._send(200, "image/png", PNG)
        elif route == "/html":
            self._send(200, "text/html; charset=utf-8", b"<html>hi</html>")
        elif route == "/fake.png":
            self._send(200, "image/png", b"definitely not an image")
        elif route == "/big-declared.png":
            self._send(200, "image/png", PNG + b"\0" * 50_000)
        elif route == "/big-streamed.png":
            self._send(200, "image/png", PNG + b"\0" * 50_000, length=False)  # HTTP/1.0: ends at close
        elif route == "/gzip.png":
            self._send(200, "image/png", PNG, Content_Encoding="gzip")
        elif route == "/slow.png":
            self.stop.wait(3)
            self._send(200, "image/png", PNG)
        elif route == "/trickle.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "200")
            self.end_headers()
            for _ in range(200):
                if self.stop.wait(0.1):
                    return
                self.wfile.write(b"\0")
                self.wfile.flush()
        elif route == "/redirect":
            self._send(302, "text/plain", b"", Location=parse_qs(url.query)["to"][0])
        elif route == "/loop":
            self._send(302, "text/plain", b"", Location="/loop")
        else:
            self._send(404, "text/plain", b"no")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _serve(host: str, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    stop = threading.Event()
    handler = type("H", (_Handler,), {"stop": stop})
    httpd = _QuietServer((host, 0), handler)
    port = httpd.server_address[1]
    state = Server(base=f"{'https' if tls else 'http'}://{host}:{port}", port=port)
    handler.state = state  # type: ignore[attr-defined]
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: state.sni.append(name or "") or None  # type: ignore[func-returns-value]
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def server2() -> Iterator[Server]:
    yield from _serve("127.0.0.2")


def _fetcher(**kw: object) -> ReferenceFetcher:
    kw.setdefault("allow_http", True)
    return ReferenceFetcher(**kw)  # type: ignore[arg-type]


# -- loopback and private addresses ---------------------------------------------------------------


def test_loopback_is_refused_by_default(server: Server, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="loopback address: refused"):
        _fetcher().fetch(f"{server.base}/ok.png", tmp_path)
    assert server.requests == [], "refused before connecting"


def test_loopback_is_fetched_with_allow_private(server: Server, tmp_path: Path) -> None:
    ref = _fetcher(allow_private=True).fetch(f"{server.base}/ok.png", tmp_path)
    assert ref.data == PNG and ref.mime_type == "image/png" and ref.sha256 == hashlib.sha256(PNG).hexdigest()


def test_http_needs_allow_http(server: Server, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="https only"):
        ReferenceFetcher(allow_private=True).fetch(f"{server.base}/ok.png", tmp_path)


def test_redirect_to_loopback_is_refused(server: Server, server2: Server, tmp_path: Path) -> None:
    # server2 (127.0.0.2) is allow-listed like an internal image host; its redirect to 127.0.0.1 is not
    fetcher = _fetcher(allow_networks=("127.0.0.2/32",))
    assert fetcher.fetch(f"{server2.base}/ok.png", tmp_path).data == PNG
    with pytest.raises(InputError, match=r"127\.0\.0\.1, a loopback address"):
        fetcher.fetch(f"{server2.base}/redirect?to={server.base}/ok.png", tmp_path)
    assert server.requests == []
    followed = _fetcher(allow_private=True).fetch(
        f"{server2.base}/redirect?to={server.base}/ok.png", tmp_path
    )
    assert followed.data == PNG and server.requests == [("/ok.png", f"127.0.0.1:{server.port}")]


def test_redirects_relative_and_limited(server: Server, tmp_path: Path) -> None:
    fetcher = _fetcher(allow_private=True)
    assert fetcher.fetch(f"{server.base}/redirect?to=/ok.png", tmp_path).data == PNG
    with pytest.raises(InputError, match="more than 3 redirects"):
        fetcher.fetch(f"{server.base}/loop", tmp_path)
    assert [p for p, _ in server.requests].count("/loop") == 4
    with pytest.raises(InputError, match="scheme 'file' not allowed"):
        fetcher.fetch(f"{server.base}/redirect?to=file:///etc/passwd", tmp_path)


def test_every_resolved_address_is_checked(tmp_path: Path) -> None:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.216.34", "10.0.0.5"]

    with pytest.raises(InputError, match=r"10\.0\.0\.5, a private address"):
        ReferenceFetcher(resolve_host=resolve).fetch("https://images.example.com/a.png", tmp_path)
    assert calls == ["images.example.com"]


def test_connection_is_pinned_to_the_checked_address(server: Server, tmp_path: Path) -> None:
    answers = iter([["127.0.0.1"], ["10.66.66.66"]])  # a rebinding DNS would answer differently next time
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    url = f"http://images.internal.test:{server.port}/ok.png"
    ref = _fetcher(allow_private=True, resolve_host=resolve).fetch(url, tmp_path)
    assert ref.data == PNG
    assert calls == ["images.internal.test"], "resolved once, connected to that answer"
    assert server.requests == [("/ok.png", f"images.internal.test:{server.port}")], "Host header kept"


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("images.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("images.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server_ctx, client_ctx


def test_https_pinned_ip_keeps_sni_and_certificate_name(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path)
    gen = _serve("127.0.0.1", tls=server_ctx)
    srv = next(gen)
    try:
        fetcher = ReferenceFetcher(
            allow_private=True, verify=client_ctx, resolve_host=lambda host, port: ["127.0.0.1"]
        )
        ref = fetcher.fetch(f"https://images.test:{srv.port}/ok.png", tmp_path)
        assert ref.data == PNG
        assert srv.sni == ["images.test"]
        assert srv.requests == [("/ok.png", f"images.test:{srv.port}")]
        # the same server by IP: the certificate does not name 127.0.0.1, so verification fails
        with pytest.raises(InputError, match="cannot connect"):
            ReferenceFetcher(allow_private=True, verify=client_ctx).fetch(f"{srv.base}/ok.png", tmp_path)
    finally:
        gen.close()


# -- what a response must be ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/html", "content type 'text/html' is not an image"),
        ("/fake.png", "not a PNG, JPEG or WebP image"),
        ("/big-declared.png", "larger than 10000 bytes"),
        ("/big-streamed.png", "larger than 10000 bytes"),
        ("/gzip.png", "content encoding 'gzip'"),
        ("/missing.png", "HTTP 404"),
    ],
)
def test_response_limits(server: Server, tmp_path: Path, route: str, message: str) -> None:
    fetcher = _fetcher(allow_private=True, max_bytes=10_000)
    with pytest.raises(InputError, match=message) as info:
        fetcher.fetch(f"{server.base}{route}", tmp_path)
    assert route in info.value.message  # the reference is named


def test_total_timeout(server: Server, tmp_path: Path) -> None:
    fetcher = _fetcher(allow_private=True, total_timeout_s=0.5)
    for route in ("/slow.png", "/trickle.png"):
        started = time.monotonic()
        with pytest.raises(InputError, match="timed out"):
            fetcher.fetch(f"{server.base}{route}", tmp_path)
        assert time.monotonic() - started < 1.5, route


def test_credentials_and_bad_urls_are_refused(tmp_path: Path) -> None:
    fetcher = ReferenceFetcher()
    for url, message in [
        ("https://user:pw@example.com/a.png", "credentials"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://[fd00:ec2::254]/", "metadata"),
        ("https:///nohost.png", "no host"),
        ("gopher://example.com/x", "unsupported scheme"),
    ]:
        with pytest.raises(InputError, match=message):
            fetcher.fetch(url, tmp_path)
    with pytest.raises(InputError, match="metadata"):
        ReferenceFetcher(allow_private=True, allow_networks=("169.254.0.0/16",)).fetch(
            "https://169.254.169.254/x.png", tmp_path
        )


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),
        ("169.254.1.1", True),
        ("224.0.0.1", True),
        ("0.0.0.0", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("2002:7f00:1::1", True),
        ("64:ff9b::a00:1", True),
        ("169.254.169.254", True),
        ("fd00:ec2::254", True),
    ],
)
def test_address_policy(address: str, refused: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip, allow_private=False) is not None) == refused
    metadata = address in ("169.254.169.254", "fd00:ec2::254")
    assert (address_problem(ip, allow_private=True) is not None) == metadata


# -- local files and s3 ---------------------------------------------------------------------------


def test_local_references(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "a.png").write_bytes(PNG)
    (tmp_path / "refs" / "notes.txt").write_text("hello")
    (tmp_path / "refs" / "big.png").write_bytes(PNG + b"\0" * 5000)
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    outside.write_bytes(PNG)
    (tmp_path / "refs" / "link.png").symlink_to(outside)
    ok = resolve_reference("refs/a.png", tmp_path)
    assert ok.sha256 == hashlib.sha256(PNG).hexdigest() and ok.mime_type == "image/png"
    assert resolve_reference("./refs/../refs/a.png", tmp_path).data == PNG
    cases = [
        ("../outside.png", "leaves the manifest's directory"),
        (str(outside), "leaves the manifest's"),
        ("refs/link.png", "leaves the manifest's directory"),
        ("refs/missing.png", "file not found"),
        ("refs/notes.txt", "not a PNG"),
        ("refs", "not a regular file"),
        ("", "empty reference"),
    ]
    for source, message in cases:
        with pytest.raises(InputError, match=message):
            resolve_reference(source, tmp_path)
    with pytest.raises(InputError, match="more than 1000"):
        resolve_reference("refs/big.png", tmp_path, fetcher=ReferenceFetcher(max_bytes=1000))


def test_s3_references(tmp_path: Path) -> None:
    store = {("bucket", "refs/a.png"): PNG}

    def s3_get(bucket: str, key: str) -> bytes:
        try:
            return store[(bucket, key)]
        except KeyError:
            raise StorageError(f"no such object {bucket}/{key}", retryable=False) from None

    with pytest.raises(InputError, match="s3 references need storage configured"):
        resolve_reference("s3://bucket/refs/a.png", tmp_path)
    assert resolve_reference("s3://bucket/refs/a.png", tmp_path, s3_get=s3_get).data == PNG
    with pytest.raises(InputError, match="no such object"):
        resolve_reference("s3://bucket/refs/b.png", tmp_path, s3_get=s3_get)
    with pytest.raises(InputError, match="s3://bucket/key"):
        resolve_reference("s3://bucket", tmp_path, s3_get=s3_get)
    assert fetch_reference_bytes("s3://bucket/refs/a.png", s3_get=s3_get) == PNG
