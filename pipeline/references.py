"""Reference images: local files under the manifest's directory, s3:// objects and https URLs.

Every reference is read with a size cap, sniffed with Pillow (PNG, JPEG or WebP only; the MIME type comes from
the bytes, never from a file name or a Content-Type header) and hashed. Every failure is an InputError whose
message names the reference; the manifest expansion adds the item's place.

URL fetching defends against server-side request forgery:
- https only (http when `allow_http`), no credentials in the URL;
- the host is resolved here and EVERY address checked: private, loopback, link-local, multicast, reserved,
  unspecified and shared addresses (and IPv4 addresses embedded in IPv6: mapped, 6to4, Teredo, NAT64) are
  refused unless `allow_private` (or listed in `allow_networks`); cloud metadata addresses always are;
- the connection goes to the checked address (the URL's host is swapped for the IP, the Host header and TLS
  SNI/certificate name stay the original host), so a DNS answer that changes between check and connect
  (rebinding) cannot redirect it;
- redirects are followed by hand, at most `max_redirects`, each new location checked the same way;
- connect timeout, a total deadline checked between chunks (so the worst case is about twice the total: one
  read can block for the rest of the deadline), a streamed size cap, image/* Content-Type only, identity
  encoding only (no decompression bombs), no proxies from the environment.

httpx errors are translated here, at this one boundary.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from pipeline.errors import InputError, PipelineError
from pipeline.files import read_capped
from pipeline.providers.base import Reference

#: largest reference image, in bytes (local, s3 or URL)
MAX_REFERENCE_BYTES = 20 * 1024 * 1024
#: TCP (and TLS) connect timeout for reference URLs
CONNECT_TIMEOUT_S = 5.0
#: deadline for a whole URL fetch, redirects included
TOTAL_TIMEOUT_S = 20.0
#: redirects followed, each re-checked
MAX_REDIRECTS = 3
#: image formats accepted as references (Pillow format name -> MIME type)
IMAGE_FORMATS: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: addresses refused even with allow_private (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
S3Get = Callable[[str, str], bytes]
#: (host, port) -> IP address strings; the default asks the system resolver
HostResolver = Callable[[str, int], Sequence[str]]


def system_resolve(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for `host` (deduplicated, in order)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


@dataclass(frozen=True)
class ReferenceFetcher:
    """How references are fetched. Build it at the composition root; `fetch` fits `expand_items`."""

    #: reads s3://bucket/key; None means s3 references are refused
    s3_get: S3Get | None = None
    allow_private: bool = False
    #: networks allowed even though not public (e.g. "10.20.0.0/16" for an internal image host)
    allow_networks: tuple[str, ...] = ()
    allow_http: bool = False
    max_bytes: int = MAX_REFERENCE_BYTES
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    total_timeout_s: float = TOTAL_TIMEOUT_S
    max_redirects: int = MAX_REDIRECTS
    resolve_host: HostResolver = system_resolve
    #: TLS verification: True (system CAs), or an SSLContext (e.g. a test CA)
    verify: ssl.SSLContext | bool = True

    def check_url(self, source: str) -> None:
        """Refuse (InputError) an http(s) URL whose scheme, credentials or resolved addresses this policy does not
        allow; nothing is fetched. Used for URLs a provider answers with (outputs to download at once)."""
        try:
            url = httpx.URL(source)
        except (httpx.InvalidURL, ValueError, TypeError) as e:
            raise InputError(f"URL {source!r}: invalid ({e})") from None
        self._checked_addresses(source, url)

    def fetch(self, source: str, base_dir: Path) -> Reference:
        return resolve_reference(source, base_dir, fetcher=self)

    def read(self, source: str, base_dir: Path | None = None) -> bytes:
        """The raw bytes of a reference (capped, not sniffed). Local paths need `base_dir`."""
        scheme = _scheme(source)
        if scheme == "s3":
            return self._read_s3(source)
        if scheme in ("https", "http"):
            return self._read_url(source)
        if scheme is not None:
            raise InputError(f"reference {source!r}: unsupported scheme {scheme!r} (use a path, s3:// or https://)")
        if base_dir is None:
            raise InputError(f"reference {source!r}: a local path needs the manifest's directory")
        path = local_reference_path(source, base_dir)
        return read_capped(path, self.max_bytes, what=f"reference {source!r}")

    # -- s3 ----------------------------------------------------------------------------------------------
    def _read_s3(self, source: str) -> bytes:
        bucket, _, key = source[len("s3://"):].partition("/")
        if not bucket or not key:
            raise InputError(f"reference {source!r}: an s3 reference is s3://bucket/key")
        if self.s3_get is None:
            raise InputError(f"reference {source!r}: s3 references need storage configured")
        try:
            data = self.s3_get(bucket, key)
        except (PipelineError, OSError, KeyError) as e:  # the storage seam raises StorageError
            raise InputError(f"reference {source!r}: cannot read it from s3: {e}") from None
        if len(data) > self.max_bytes:
            raise InputError(f"reference {source!r}: larger than {self.max_bytes} bytes")
        return data

    # -- https -------------------------------------------------------------------------------------------
    def _read_url(self, source: str) -> bytes:
        deadline = time.monotonic() + self.total_timeout_s
        try:
            url = httpx.URL(source)
        except (httpx.InvalidURL, ValueError, TypeError) as e:
            raise InputError(f"reference {source!r}: invalid URL ({e})") from None
        for _hop in range(self.max_redirects + 1):
            addresses = self._checked_addresses(source, url)
            body, location = self._get_pinned(source, url, addresses, deadline)
            if location is None:
                return body
            try:
                url = url.join(location)
            except (httpx.InvalidURL, ValueError, TypeError) as e:
                raise InputError(f"reference {source!r}: bad redirect location {location!r} ({e})") from None
        raise InputError(f"reference {source!r}: more than {self.max_redirects} redirects")

    def _checked_addresses(self, source: str, url: httpx.URL) -> list[str]:
        """Check the URL's scheme and host and return the addresses to connect to (all of them allowed)."""
        if url.scheme not in ("https", "http") or (url.scheme == "http" and not self.allow_http):
            raise InputError(f"reference {source!r}: scheme {url.scheme!r} not allowed (https only)")
        if url.userinfo:
            raise InputError(f"reference {source!r}: credentials in reference URLs are not allowed")
        host = url.host
        if not host:
            raise InputError(f"reference {source!r}: URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [str(literal)]
        else:
            try:
                candidates = list(self.resolve_host(url.raw_host.decode("ascii"), port))
            except (OSError, UnicodeError, ValueError) as e:
                raise InputError(f"reference {source!r}: cannot resolve host {host!r} ({e})") from None
        if not candidates:
            raise InputError(f"reference {source!r}: host {host!r} has no address")
        checked: list[str] = []
        for cand in candidates:
            try:
                ip = ipaddress.ip_address(cand.split("%", 1)[0])
            except ValueError:
                raise InputError(f"reference {source!r}: resolver gave a bad address {cand!r}") from None
            problem = address_problem(ip, allow_private=self.allow_private)
            if problem and ip not in METADATA_ADDRESSES and self._allow_listed(ip):
                problem = None
            if problem:
                raise InputError(f"reference {source!r}: host {host!r} resolves to {ip}, {problem}: refused")
            checked.append(str(ip))
        return checked

    def _allow_listed(self, ip: IPAddress) -> bool:
        try:
            return any(ip in ipaddress.ip_network(net, strict=False) for net in self.allow_networks)
        except ValueError:
            raise InputError(f"bad network in allow_networks: {self.allow_networks!r}") from None

    def _get_pinned(self, source: str, url: httpx.URL, addresses: list[str],
                    deadline: float) -> tuple[bytes, str | None]:
        """GET `url` from the first address that takes the connection: (body, None) or (b"", location)."""
        headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*", "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        last: Exception | None = None
        with httpx.Client(verify=self.verify, trust_env=False, follow_redirects=False) as client:
            for ip in addresses:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout = httpx.Timeout(remaining, connect=min(self.connect_timeout_s, remaining))
                try:
                    with client.stream("GET", url.copy_with(host=ip), headers=headers, timeout=timeout,
                                       extensions=extensions) as resp:
                        return self._read_response(source, resp, deadline)
                except httpx.ConnectError as e:
                    last = e
                    continue
                except httpx.TimeoutException:
                    raise InputError(f"reference {source!r}: timed out") from None
                except httpx.HTTPError as e:
                    detail = f"{type(e).__name__}: {e}"
                    raise InputError(f"reference {source!r}: cannot fetch ({detail})") from None
        if last is None:
            raise InputError(f"reference {source!r}: timed out")
        raise InputError(f"reference {source!r}: cannot connect ({last})") from None

    def _read_response(self, source: str, resp: httpx.Response, deadline: float) -> tuple[bytes, str | None]:
        if resp.status_code in _REDIRECTS:
            location = resp.headers.get("location")
            if not location:
                raise InputError(f"reference {source!r}: redirect without a location")
            return b"", location
        if resp.status_code != 200:
            raise InputError(f"reference {source!r}: HTTP {resp.status_code}")
        ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not ctype.startswith("image/"):
            raise InputError(f"reference {source!r}: content type {ctype or 'missing'!r} is not an image")
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise InputError(f"reference {source!r}: content encoding {encoding!r} not accepted")
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise InputError(f"reference {source!r}: larger than {self.max_bytes} bytes")
        body = bytearray()
        for chunk in resp.iter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise InputError(f"reference {source!r}: larger than {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise InputError(f"reference {source!r}: timed out")
        return bytes(body), None


def resolve_reference(source: str, base_dir: Path, *, fetcher: ReferenceFetcher | None = None,
                      s3_get: S3Get | None = None, allow_private: bool = False) -> Reference:
    """Fetch, check and hash one reference. `fetcher` carries the policy; without it one is built from
    `s3_get` and `allow_private`. Raises InputError naming the reference."""
    if fetcher is None:
        fetcher = ReferenceFetcher(s3_get=s3_get, allow_private=allow_private)
    if not isinstance(source, str) or not source.strip():
        raise InputError("empty reference")
    data = fetcher.read(source, base_dir)
    mime = sniff_image(data)
    if mime is None:
        raise InputError(f"reference {source!r}: not a PNG, JPEG or WebP image")
    return Reference(data=data, mime_type=mime, sha256=hashlib.sha256(data).hexdigest())


def fetch_reference_bytes(source: str, *, s3_get: S3Get | None = None, allow_private: bool = False,
                          allow_http: bool = False) -> bytes:
    """Raw bytes of an s3:// or https:// reference, under the same checks (the worker re-reads references)."""
    return ReferenceFetcher(s3_get=s3_get, allow_private=allow_private, allow_http=allow_http).read(source)


def reread_reference(source: str, *, s3_get: S3Get | None = None, allow_private: bool = False) -> bytes:
    """The bytes of a reference recorded at submit, read again by a worker under the limits submit applied:
    s3:// and https:// through the same fetcher (size cap, SSRF checks, deadline); a local path (recorded
    absolute) must still be a regular file of at most MAX_REFERENCE_BYTES (FIFOs, devices such as /dev/zero and
    directories refused without reading). Raises InputError naming the reference."""
    if _scheme(source) is not None:
        return fetch_reference_bytes(source, s3_get=s3_get, allow_private=allow_private)
    return read_capped(Path(source), MAX_REFERENCE_BYTES, what=f"reference {source!r}")


def local_reference_path(source: str, base_dir: Path) -> Path:
    """The resolved path of a local reference; refuses paths that leave `base_dir` (symlinks included)."""
    if "\x00" in source:
        raise InputError(f"reference {source!r}: NUL in path")
    try:
        root = base_dir.resolve()
        path = (root / source).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise InputError(f"reference {source!r}: bad path ({e})") from None
    if not path.is_relative_to(root):
        raise InputError(f"reference {source!r}: path leaves the manifest's directory")
    return path


def sniff_image(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG or WebP image; None when `data` is not one (or is a pixel bomb)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as img:
                fmt = img.format
                img.verify()
        except Exception:  # Pillow's decoders raise many types on bad input; every one means "not an image"
            return None
    return IMAGE_FORMATS.get(fmt or "")


def _embedded_v4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): the kernel may route to them."""
    embedded: list[ipaddress.IPv4Address] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


def address_problem(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why connecting to `ip` is refused, or None when it is allowed."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for inner in _embedded_v4(ip):  # ::ffff:169.254.169.254 reaches the metadata service too
        if inner in METADATA_ADDRESSES:
            return f"a cloud metadata address (embedded {inner})"
    if allow_private:
        return None
    for inner in _embedded_v4(ip):
        problem = address_problem(inner, allow_private=False)
        if problem:
            return f"{problem} (embedded {inner})"
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    for bad, why in checks:
        if bad:
            return why
    return None


def _scheme(source: str) -> str | None:
    m = _SCHEME.match(source)
    return m.group(1).lower() if m else None
