"""Fetching image bytes: http(s) with retries and guards, gs:// and local files via FileSystems.

:class:`Fetcher` is plain Python (no Beam) so it is tested directly against a loopback
server; :mod:`pipeline.images.transforms` wraps it in a DoFn that creates one per worker in
``setup()``. Catalog dumps are untrusted input, so a fetch refuses: schemes other than http,
https, gs and local files; local paths outside the allowed roots (after resolving symlinks);
and, unless switched off, hosts that resolve to private, loopback, link-local or reserved
addresses, re-checked on every redirect hop (the address checks are in :mod:`pipeline.images.guard`).
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import logging
import random
import socket
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from pipeline.images.cache import CacheEntry, ImageCache
from pipeline.images.config import FetchConfig
from pipeline.images.files import OBJECT_STORES, Fetched, FetchError, FileReader
from pipeline.images.guard import ForbiddenAddress, guarded_adapter, is_public_address
from pipeline.images.validators import conditional_headers, http_validator
from pipeline.records import Reason

_LOG = logging.getLogger(__name__)
_RETRY_STATUS = {429, 500, 502, 503, 504}


def is_remote(uri: str) -> bool:
    """Whether ``uri`` is fetched over the network (http(s) or an object store), not a local file."""
    return "://" in uri and not uri.startswith("file:")


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class Fetcher:
    """Fetches one URI at a time; thread-safe for concurrent calls (one Session, pooled)."""

    def __init__(self, config: FetchConfig, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, resolver=socket.getaddrinfo,
                 address_policy: Callable[[str], bool] = is_public_address, rng: random.Random | None = None):
        self._cfg = config
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self._files = FileReader(config)
        pool = max(4, config.concurrency)
        if config.allow_private_addresses:
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
        else:
            adapter = guarded_adapter(resolver, address_policy, pool)
        self._session = requests.Session()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = config.user_agent
        # One session serves every host: never store or replay cookies across them.
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._cache = ImageCache(config.cache) if config.cache else None

    def close(self) -> None:
        self._session.close()

    # -- entry point -------------------------------------------------------------------
    def fetch(self, uri: str, validator: str | None = None, *, body: bool = True) -> Fetched:
        """The bytes at ``uri``; with ``validator`` (a previous fetch's), a conditional fetch:
        ``not_modified`` and no bytes when it still holds, else the new bytes. ``body=False``:
        only whether the validator holds, for files and objects (a changed one is not read; its
        ``data`` is empty); over HTTP a 200 carries its body all the same."""
        start = self._clock()
        try:
            scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
        except ValueError as exc:
            raise FetchError(Reason.FORBIDDEN_URI, f"malformed URI {uri[:200]!r}: {exc}") from exc
        if scheme in ("http", "https"):
            data, status, attempts, hit, current = self._fetch_http(uri, validator)
        elif scheme and scheme != "file":
            if scheme not in OBJECT_STORES:
                raise FetchError(Reason.FORBIDDEN_URI, f"scheme {scheme!r} is not allowed")
            (data, current), status, attempts, hit = self._files.read_object(uri, validator, body), None, 1, False
        else:
            (data, current), status, attempts, hit = self._files.read_local(uri, validator, body), None, 1, False
        return Fetched(data or b"", status, attempts, (self._clock() - start) * 1000.0, hit, current,
                       not_modified=data is None)

    def fetch_or_error(self, uri: str, validator: str | None = None, *, body: bool = True) -> Fetched | FetchError:
        """:meth:`fetch`, with the error to dead-letter returned instead of raised (never raises:
        one odd URI must not fail the whole job)."""
        try:
            return self.fetch(uri, validator, body=body)
        except FetchError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001
            return FetchError(Reason.FETCH_ERROR, f"{type(exc).__name__}: {exc}"[:500])

    # -- http ------------------------------------------------------------------------------
    @staticmethod
    def _check_url(url: str) -> None:
        """Scheme and host syntax of the URL (and of every redirect hop); addresses are checked
        when connecting (see :func:`~pipeline.images.guard.guarded_adapter`)."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on an out-of-range port
        except ValueError as exc:
            raise FetchError(Reason.FORBIDDEN_URI, f"malformed URL {url[:200]!r}: {exc}") from exc
        if parts.scheme.lower() not in ("http", "https"):
            raise FetchError(Reason.FORBIDDEN_URI, f"redirect to forbidden scheme: {url[:200]}")
        if not parts.hostname:
            raise FetchError(Reason.FORBIDDEN_URI, f"URL has no host: {url[:200]}")

    def _fetch_http(self, url: str, validator: str | None) -> tuple[bytes | None, int, int, bool, str | None]:
        """(bytes, or None when ``validator`` still holds (304); status; attempts; cache hit; validator).
        A ``validator`` is sent instead of the image cache's: a 304 then needs no cached body."""
        cfg = self._cfg
        cached: CacheEntry | None = None if conditional_headers(validator) else self._cache_get(url)
        attempts = 0
        while True:
            attempts += 1
            wait: float | None = None
            try:
                data, status, headers = self._get_following_redirects(
                    url, conditional_headers(validator) or self._cached_headers(cached))
            except FetchError as exc:
                exc.attempts = attempts
                retryable = exc.reason in (Reason.CONNECTION_ERROR, Reason.TIMEOUT) or exc.status in _RETRY_STATUS
                if not retryable or attempts > cfg.max_retries:
                    raise
                wait = exc.retry_after
            else:
                if status == 304 and conditional_headers(validator):
                    return None, status, attempts, False, validator
                if status == 304 and cached is not None:
                    return cached.data, status, attempts, True, http_validator(cached.etag, cached.last_modified)
                self._cache_put(url, data, headers)
                return data, status, attempts, False, http_validator(headers.get("ETag"), headers.get("Last-Modified"))
            backoff = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempts - 1))
            delay = backoff * (0.5 + self._rng.random() / 2)  # exponential backoff, jittered
            if wait is not None:
                delay = min(max(delay, wait), cfg.retry_after_max_s)
            self._sleep(delay)

    def _cache_get(self, url: str) -> CacheEntry | None:
        if self._cache is None:
            return None
        try:
            return self._cache.get(url)
        except Exception as exc:  # noqa: BLE001 - a broken cache must not fail the fetch
            _LOG.warning("image cache read failed for %s: %s", url, exc)
            return None

    def _cache_put(self, url: str, data: bytes, headers) -> None:
        if self._cache is None:
            return
        try:
            self._cache.put(url, data, etag=headers.get("ETag"), last_modified=headers.get("Last-Modified"))
        except Exception as exc:  # noqa: BLE001 - a broken cache must not fail the fetch
            _LOG.warning("image cache write failed for %s: %s", url, exc)

    @staticmethod
    def _cached_headers(cached: CacheEntry | None) -> dict[str, str]:
        headers = {}
        if cached is not None:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        return headers

    def _get_following_redirects(self, url: str, headers: dict[str, str]):
        cfg = self._cfg
        for _hop in range(cfg.max_redirects + 1):
            self._check_url(url)
            try:
                response = self._session.get(url, headers=headers, stream=True, allow_redirects=False,
                                             timeout=(cfg.connect_timeout_s, cfg.read_timeout_s))
            except ForbiddenAddress as exc:
                raise FetchError(Reason.FORBIDDEN_URI, str(exc)) from exc
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                    requests.exceptions.MissingSchema) as exc:
                raise FetchError(Reason.FORBIDDEN_URI, f"invalid URL: {exc}") from exc
            except requests.exceptions.Timeout as exc:
                raise FetchError(Reason.TIMEOUT, f"timed out: {exc}") from exc
            except requests.exceptions.RequestException as exc:
                raise FetchError(Reason.CONNECTION_ERROR, f"connection failed: {exc}") from exc
            with response:
                if response.is_redirect:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status_code == 304:
                    return b"", 304, response.headers
                if response.status_code >= 400:
                    reason = Reason.HTTP_5XX if response.status_code >= 500 else Reason.HTTP_4XX
                    raise FetchError(reason, f"HTTP {response.status_code} {response.reason}",
                                     status=response.status_code,
                                     retry_after=_retry_after(response.headers.get("Retry-After"), time.time()))
                return self._read_body(response), response.status_code, response.headers
        raise FetchError(Reason.TOO_MANY_REDIRECTS, f"more than {cfg.max_redirects} redirects")

    def _read_body(self, response: requests.Response) -> bytes:
        limit = self._cfg.max_bytes
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise FetchError(Reason.TOO_LARGE, f"Content-Length {length} exceeds {limit} bytes",
                             status=response.status_code)
        chunks, total = [], 0
        deadline = self._clock() + self._cfg.total_timeout_s
        try:
            # read1: what one socket read brings (at most 64 KiB), so the deadline is checked after
            # every arrival; a fixed-size read would wait for 64 KiB, and a server dripping a byte
            # every few seconds (each within the read timeout) would hold the thread for days.
            while chunk := response.raw.read1(65536, decode_content=True):
                total += len(chunk)
                if total > limit:
                    raise FetchError(Reason.TOO_LARGE, f"body exceeds {limit} bytes", status=response.status_code)
                if self._clock() > deadline:
                    raise FetchError(Reason.TIMEOUT, f"body not complete after {self._cfg.total_timeout_s} s",
                                     status=response.status_code)
                chunks.append(chunk)
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
            # read timeout, connection reset mid-body, broken chunked encoding or gzip
            timed_out = isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or "timed out" in str(exc)
            raise FetchError(Reason.TIMEOUT if timed_out else Reason.CONNECTION_ERROR, f"reading body failed: {exc}",
                             status=response.status_code) from exc
        return b"".join(chunks)
