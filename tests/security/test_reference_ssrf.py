"""Reference URLs against server-side request forgery, beyond tests/manifest/test_references.py (which covers
the address policy table, loopback, one redirect to loopback, multi-address answers, pinning, size and time
limits): other spellings of private and metadata addresses, redirect chains to each kind of forbidden
target, resolver answers that point inside, and the worker's re-read of a reference at processing time.

Every case uses a real loopback image server: a refused URL must not reach it (no request at all)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.references import ReferenceFetcher
from pipeline.runtime import reference_loader
from tests.manifest.test_references import PNG, Server, _serve


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def relay() -> Iterator[Server]:
    """An allow-listed "internal image host" (127.0.0.2) whose redirects are followed."""
    yield from _serve("127.0.0.2")


#: other spellings of 127.0.0.1 (the server's address) that resolvers and URL parsers accept
LOOPBACK_SPELLINGS = ["2130706433", "0x7f000001", "017700000001", "127.1", "127.0.1", "0x7f.0.0.1", "0177.0.0.1",
                      "localhost", "LOCALHOST", "localhost.", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "0",
                      "0.0.0.0", "[::]", "[::1]", "127.0.0.1.", "[0:0:0:0:0:ffff:127.0.0.1]"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_loopback_spellings_are_refused_before_connecting(server: Server, tmp_path: Path, host: str) -> None:
    with pytest.raises(InputError) as info:
        ReferenceFetcher(allow_http=True).fetch(f"http://{host}:{server.port}/ok.png", tmp_path)
    # refused by the address policy, or not even a valid URL / resolvable name: never fetched either way
    assert any(w in info.value.message for w in ("refused", "cannot resolve", "invalid URL")), info.value.message
    assert server.requests == [], f"{host} reached the server"


#: other spellings of the cloud metadata address 169.254.169.254 (and the other metadata addresses)
METADATA_SPELLINGS = ["169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
                      "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[fd00:ec2::254]", "100.100.100.200",
                      "169.254.169.254."]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_is_refused_even_with_allow_private(tmp_path: Path, host: str) -> None:
    fetcher = ReferenceFetcher(allow_http=True, allow_private=True, allow_networks=("169.254.0.0/16",),
                               connect_timeout_s=0.5, total_timeout_s=1.0)
    with pytest.raises(InputError, match=r"metadata address.*: refused|invalid URL|cannot resolve"):
        fetcher.fetch(f"http://{host}/latest/meta-data/iam/security-credentials/", tmp_path)


def _redirect_targets(server: Server) -> dict[str, tuple[str, str]]:
    """name -> (Location the relay answers with, what the refusal must say)."""
    p = server.port
    return {
        "loopback": (f"http://127.0.0.1:{p}/ok.png", "loopback"),
        "loopback decimal": (f"http://2130706433:{p}/ok.png", "loopback"),
        "loopback hex": (f"http://0x7f000001:{p}/ok.png", "loopback"),
        "loopback mapped v6": (f"http://[::ffff:127.0.0.1]:{p}/ok.png", "loopback"),
        "localhost": (f"http://localhost:{p}/ok.png", "loopback"),
        "unspecified": (f"http://0.0.0.0:{p}/ok.png", "unspecified"),
        "metadata": ("http://169.254.169.254/latest/meta-data/", "metadata"),
        "metadata v6": ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        "private name": (f"http://intranet.example:{p}/ok.png", "private"),
        "link-local name": (f"http://printer.example:{p}/ok.png", "link-local"),
        "file scheme": ("file:///etc/passwd", "scheme 'file' not allowed"),
        "gopher scheme": ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme 'gopher' not allowed"),
        "credentials": (f"http://user:pw@127.0.0.2:{p}/ok.png", "credentials"),
    }


NAMES = {"intranet.example": ["10.0.0.5"], "printer.example": ["fe80::1"], "cdn.example": ["93.184.216.34"]}


def _resolve(host: str, port: int) -> list[str]:
    from pipeline.references import system_resolve

    return NAMES.get(host.rstrip(".")) or system_resolve(host, port)


@pytest.mark.parametrize("target", sorted(_redirect_targets(Server("", 0))))
def test_redirects_to_forbidden_targets_are_refused(server: Server, relay: Server, tmp_path: Path,
                                                    target: str) -> None:
    location, says = _redirect_targets(server)[target]
    fetcher = ReferenceFetcher(allow_http=True, allow_networks=("127.0.0.2/32",), resolve_host=_resolve)
    assert fetcher.fetch(f"{relay.base}/ok.png", tmp_path).data == PNG  # the relay itself is allowed
    with pytest.raises(InputError, match=says):
        fetcher.fetch(f"{relay.base}/redirect?to={location}", tmp_path)
    assert server.requests == [], "the redirect reached a forbidden address"


def test_redirect_chain_refused_at_the_first_forbidden_hop(server: Server, relay: Server, tmp_path: Path) -> None:
    inner = f"{relay.base}/redirect?to=http://127.0.0.1:{server.port}/ok.png"
    chain = f"{relay.base}/redirect?to={relay.base}/redirect?to={inner}"
    fetcher = ReferenceFetcher(allow_http=True, allow_networks=("127.0.0.2/32",))
    with pytest.raises(InputError, match="loopback"):
        fetcher.fetch(chain, tmp_path)
    assert server.requests == []


@pytest.mark.parametrize("answer", [["10.1.2.3"], ["192.168.0.1"], ["172.31.255.255"], ["100.64.1.1"], ["fc00::5"],
                                    ["fe80::1"], ["::ffff:10.0.0.1"], ["0.0.0.0"], ["127.0.0.1"], ["::1"],
                                    ["169.254.169.254"], ["93.184.216.34", "127.0.0.1"], ["2002:a00:1::1"],
                                    ["64:ff9b::7f00:1"], ["224.0.0.251"], ["255.255.255.255"]])
def test_dns_answers_pointing_inside_are_refused(tmp_path: Path, answer: list[str]) -> None:
    def resolve(host: str, port: int) -> list[str]:
        return answer

    with pytest.raises(InputError, match="refused"):
        ReferenceFetcher(resolve_host=resolve).fetch("https://cdn.example/product.png", tmp_path)


def test_worker_reread_applies_the_same_checks(server: Server) -> None:
    """The worker re-reads URL references when it processes an item (the job may be old, DNS may have changed):
    the same policy applies there, so a reference that now points inside is refused, not fetched."""
    load = reference_loader(None, allow_private=False)
    digest = hashlib.sha256(PNG).hexdigest()
    for url in (f"https://127.0.0.1:{server.port}/ok.png", f"https://2130706433:{server.port}/ok.png",
                "https://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{server.port}/ok.png"):
        with pytest.raises(InputError):
            load({"source": url, "sha256": digest, "mime_type": "image/png"})
    assert server.requests == []
