"""The one owner of outbound HTTP: httpx types at the seam, aiohttp underneath (by measurement).

Transport errors are classified here, once: a request that never left (refused connection,
DNS, connect timeout) is safe to retry; one that may have reached the vendor (read timeout,
reset after sending) is ambiguous and goes to the configured policy.
"""

from __future__ import annotations

import aiohttp
import httpx

from connector.errors import AmbiguousOutcome, VendorTimeout, VendorUnavailable


class HttpClient:
    """Sends httpx.Requests over a pooled aiohttp session; started in the app's lifespan."""

    def __init__(self, *, limit: int = 256) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=60,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
                headers={"User-Agent": "channel-api-connector"},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: httpx.Request, timeout: float,  # noqa: ASYNC109
                   *, what: str) -> httpx.Response:
        """Send and read the whole answer, raising a VendorError for transport failures."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        limits = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        try:
            async with self._session.request(
                request.method, str(request.url), headers=request.headers.multi_items(),
                data=request.read(), timeout=limits, allow_redirects=False,
            ) as answer:
                body = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=[(k.decode("latin-1"), v.decode("latin-1"))
                             for k, v in answer.raw_headers],
                    content=body, request=request,
                )
        except aiohttp.ConnectionTimeoutError:
            raise VendorTimeout(f"{what}: connect timed out") from None
        except aiohttp.ClientConnectorError as exc:
            raise VendorUnavailable(f"{what}: cannot connect ({exc.os_error.strerror or 'refused'})"
                                    ) from None
        except TimeoutError:
            raise AmbiguousOutcome(f"{what}: no answer within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise AmbiguousOutcome(f"{what}: connection lost ({type(exc).__name__})") from None
