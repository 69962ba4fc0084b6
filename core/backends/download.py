"""Fetch a provider's result as untrusted input.

A result URL comes from the provider's reply, so it is treated like user input: https
only, only the provider's ``result_hosts``, never a private, loopback or link-local address
(checked before connecting, after every redirect, and on the address actually connected),
an advertised size over the cap is refused before reading, the body is streamed to disk
under a byte cap and an overall time cap, and the file must be a playable MP4 with a video
and an audio stream of a sane length before anyone sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from core.errors import BackendError
from core.media import probe_video

log = logging.getLogger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
MIN_SECONDS, MAX_SECONDS = 0.5, 600.0  # a "sane" result length


def _refused(reason: str) -> BackendError:
    return BackendError(f"result refused: {reason}", transient=False, key="job.bad_result")


def host_allowed(host: str, hosts: Sequence[str]) -> bool:
    """Return whether ``host`` is listed; "*.example.com" matches its subdomains only."""
    host = host.lower().rstrip(".")
    for pattern in hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def address_allowed(address: str, *, loopback_ok: bool) -> bool:
    """Return whether a connection to ``address`` may carry a result download."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return loopback_ok
    # is_global is False for private, link-local (169.254/16, the cloud metadata address),
    # shared (100.64/10), reserved and unspecified ranges.
    return ip.is_global and not ip.is_multicast


class ResultFetcher:
    """Download result files for one provider under its host list and caps."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        hosts: Sequence[str],
        allow_insecure: bool,
        timeout: float,
    ) -> None:
        self._client = client
        self._hosts = list(hosts)
        self._insecure = allow_insecure  # for exactly the listed hosts (tests)
        self._timeout = timeout

    async def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host_allowed(host, self._hosts):
            raise _refused(f"host {host!r} is not one of the provider's result hosts")
        if parts.scheme != "https" and not (self._insecure and parts.scheme == "http"):
            raise _refused(f"{parts.scheme or 'no'} scheme (https only)")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise BackendError(f"result host {host!r} does not resolve", transient=True) from exc
        for info in infos:
            address = str(info[4][0])
            if not address_allowed(address, loopback_ok=self._insecure):
                raise _refused(f"{host!r} resolves to a non-public address {address}")

    def _check_peer(self, response: httpx.Response) -> None:
        # The name may resolve differently at connect time (DNS rebinding): check the peer.
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if not peer:
            raise _refused("the connected address cannot be checked")
        if not address_allowed(str(peer[0]), loopback_ok=self._insecure):
            raise _refused(f"connected to a non-public address {peer[0]}")

    async def fetch(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int,
        check: Callable[[Path], None] | None = None,
    ) -> None:
        """Stream ``url`` to ``dest`` under the caps, then check it (default: a talking video)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with asyncio.timeout(self._timeout):
                await self._download(url, dest, max_bytes)
            await asyncio.to_thread(check or check_result, dest)
        except TimeoutError as exc:
            dest.unlink(missing_ok=True)
            raise BackendError(
                f"result download took over {self._timeout:.0f}s", transient=True
            ) from exc
        except BackendError:
            dest.unlink(missing_ok=True)
            raise
        except httpx.HTTPError as exc:
            dest.unlink(missing_ok=True)
            raise BackendError(f"result download: {type(exc).__name__}", transient=True) from exc

    async def _download(self, url: str, dest: Path, max_bytes: int) -> None:
        for _ in range(_MAX_REDIRECTS + 1):
            await self._check_url(url)
            async with self._client.stream("GET", url, follow_redirects=False) as response:
                self._check_peer(response)
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise _refused("a redirect without a location")
                    url = urljoin(url, location)
                    continue
                if response.status_code in (403, 404, 410):
                    # Providers delete outputs (Replicate after about an hour).
                    raise BackendError(
                        f"result gone: HTTP {response.status_code}",
                        transient=False,
                        key="job.result_expired",
                    )
                if response.status_code != 200:
                    raise BackendError(
                        f"result download: HTTP {response.status_code}",
                        transient=response.status_code >= 500,
                    )
                advertised = response.headers.get("content-length")
                if advertised and advertised.isdigit() and int(advertised) > max_bytes:
                    raise _refused(f"advertised {int(advertised)} bytes, over {max_bytes}")
                received = 0
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 16):
                        received += len(chunk)
                        if received > max_bytes:
                            raise _refused(f"over {max_bytes} bytes")
                        out.write(chunk)
                return
        raise _refused(f"more than {_MAX_REDIRECTS} redirects")


def check_result(path: Path) -> None:
    """Refuse a file that is not an MP4 with a video and an audio stream of sane length."""
    info = probe_video(path)
    if not info.has_audio:
        raise _refused("no audio stream (a performance must speak)")
    if not MIN_SECONDS <= info.duration <= MAX_SECONDS:
        raise _refused(f"duration {info.duration:.1f}s")
