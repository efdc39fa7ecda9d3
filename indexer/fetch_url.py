"""Downloads for ingest by URL, safe against server-side request forgery (SSRF).

A URL given to POST /videos is fetched by the worker, which usually sits inside a network the
caller cannot reach: the cloud metadata service (169.254.169.254), the database, admin ports on
loopback. So every address the host name resolves to is checked, and the download connects to
one of those checked addresses itself (the name is never resolved a second time, so a DNS
answer that changes between the check and the connection, "DNS rebinding", cannot slip an
internal address in); redirects are followed by hand, each new target checked the same way.
Non-public addresses (loopback, private, link-local, multicast, reserved, shared...) are
refused unless ``AddressPolicy`` allows them. The body is streamed to a file and cut off as
soon as it passes the size limit; the caller checks that it is a video."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK = 1024 * 1024
USER_AGENT = "hanet-fetch/0.1"


class FetchError(Exception):
    """A URL that cannot or may not be downloaded; the message is the video's failure reason."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a download may connect to: public ones, plus all (``allow_private``)
    or the non-public ones inside ``allow_networks``."""

    allow_private: bool = False
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, allow_private: bool, networks: list[str]) -> AddressPolicy:
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        return cls(allow_private, nets)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (its kind: "loopback"...), or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        kind = address_kind(address)
        if kind is None or self.allow_private:
            return None
        if any(address.version == n.version and address in n for n in self.allow_networks):
            return None
        return kind


def address_kind(address: IPAddress) -> str | None:
    """The kind of a non-public address ("loopback", "private"...); None for a public one."""
    kinds = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    return next((name for name, flag in kinds if flag), None)


@dataclass(frozen=True)
class FetchCfg:
    """Where and how a worker downloads videos ingested by URL."""

    download_dir: Path  # the upload folder: a downloaded video is kept like an upload
    max_bytes: int  # the upload limit
    policy: AddressPolicy = field(default_factory=AddressPolicy)
    timeout_s: float = 30.0  # to connect, and between two reads
    max_s: float = 3600.0  # the whole download
    max_redirects: int = 5


def parse_url(url: str) -> SplitResult:
    """``url`` split, if it is an http(s) URL with a host and no credentials; else FetchError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise FetchError(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be ingested, not {parts.scheme!r}")
    if not parts.hostname:
        raise FetchError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise FetchError("credentials in the URL are not accepted")
    return parts


def checked_addresses(url: str, policy: AddressPolicy) -> list[IPAddress]:
    """Every address ``url``'s host resolves to, if the policy allows them all; else
    FetchError with the reason (one refused address refuses the URL: a client could be sent
    to any of them)."""
    parts = parse_url(url)
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        kind = policy.refusal(address)
        if kind is not None:
            raise FetchError(
                f"refused: {host} is {address}, a {kind} address (HANET_URL_ALLOW_PRIVATE or "
                "HANET_URL_ALLOW_NETWORKS would allow it)"
            )
    if not addresses:
        raise FetchError(f"cannot resolve {host!r}: no address")
    return addresses


def download(url: str, cfg: FetchCfg, on_progress: Callable[[int], None] | None = None) -> Path:
    """Download ``url`` into a new hidden file of ``cfg.download_dir`` and return its path
    (the caller keeps or removes it); FetchError with the reason on a refused address or
    redirect, an HTTP error, a body over ``cfg.max_bytes`` or a download too slow.
    ``on_progress`` gets the bytes read so far, after each chunk."""
    for _ in range(cfg.max_redirects + 1):
        response = _get(url, cfg)
        try:
            if response.status in REDIRECTS and response.getheader("location"):
                url = urljoin(url, response.getheader("location"))
                continue
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} {response.reason} from {url}")
            return _save(response, cfg, on_progress)
        finally:
            response.close()
    raise FetchError(f"more than {cfg.max_redirects} redirects")


def _get(url: str, cfg: FetchCfg) -> http.client.HTTPResponse:
    """GET ``url`` from one of its checked addresses (the first that answers)."""
    parts = parse_url(url)
    addresses = checked_addresses(url, cfg.policy)
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    error: OSError | None = None
    for address in addresses:
        conn = kind(parts.hostname, parts.port, timeout=cfg.timeout_s)
        conn.address = str(address)
        try:
            conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            return conn.getresponse()
        except OSError as exc:  # refused, unreachable, timed out, TLS: the next address
            conn.close()
            error = exc
    raise FetchError(f"cannot download {url}: {error}")


def _save(
    response: http.client.HTTPResponse, cfg: FetchCfg, on_progress: Callable[[int], None] | None
) -> Path:
    limit = cfg.max_bytes
    declared = response.getheader("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchError(f"the download is larger than the upload limit ({limit} bytes)")
    cfg.download_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.download_dir / f".{uuid.uuid4().hex}.download"
    start, size = time.monotonic(), 0
    try:
        with path.open("wb") as out:
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > limit:  # stop at once: never more than the limit and one chunk
                    raise FetchError(
                        f"the download is larger than the upload limit ({limit} bytes)"
                    )
                if time.monotonic() - start > cfg.max_s:
                    raise FetchError(f"the download took longer than {cfg.max_s:g} s")
                out.write(chunk)
                if on_progress is not None:
                    on_progress(size)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FetchError(f"the download broke off: {exc}") from exc
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise FetchError("the download is empty")
    return path


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to ``address`` (a checked one), sending the URL's host name."""

    address = ""

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to ``address``, whose certificate must be the URL's host's."""

    address = ""

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
