"""Step family: http — `httpRequest`, an outbound call guarded against SSRF, time and size abuse.

Every hop (the first request and each redirect) goes through `tools.netguard.check_url`, and the
connection is made to the exact address that was checked: the URL is rewritten to that IP, with
the original `Host` header and TLS server name (SNI, certificate check) kept. No proxy from the
environment is used, no connection is reused between calls, and nothing is retried.

Output: `{"status": int, "headers": {lower-case name: value}, "body": JSON value or text}`. A
non-2xx answer is an output, not a failure, so a later `assert` or `if` can decide; transport
failures, timeouts and oversized answers fail the step with a stable reason.
"""

import asyncio
import functools
import json
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import httpx
import orjson
from pydantic import Field, field_validator

from apiforge.core.lazydb import LazyConnection
from apiforge.engine.base import MIN_SUBSTRING_MASK, LimitExceededError, RunContext
from apiforge.engine.errors import step_error
from apiforge.engine.spec import StepSpec
from apiforge.engine.values import CompiledValue
from apiforge.tools.expressions import MAX_RESULT_DEPTH
from apiforge.tools.netguard import (
    AllowList,
    BlockedTargetError,
    NetGuardError,
    Resolver,
    Target,
    check_url,
    parse_url,
    system_resolver,
)

MAX_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
MAX_CODINGS = 5  # gzip/deflate layers undone in one answer (curl's limit, CVE-2022-32206)
MAX_BODY_DEPTH = MAX_RESULT_DEPTH  # JSON nesting read as JSON: what an expression may produce
USER_AGENT = "apiforge-httpRequest/1"

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a header value; a tab is allowed
# Headers the step sets itself, or that would let a caller smuggle a second request.
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "expect",
    }
)
# Dropped when a redirect leaves the original origin (what browsers and curl do); so is any
# header that carries one of the call's secrets (`_carries_secret`).
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
_REDIRECTS = {301, 302, 303, 307, 308}
# Content codings undone here, as httpx would (others are passed through as they are).
_CODINGS = frozenset({"gzip", "deflate"})
_SLACK = 64 * 1024  # what one intermediate layer of a stacked coding may exceed the cap by


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """Certificate store loaded once per process (loading it costs tens of milliseconds)."""
    return httpx.create_ssl_context()


class HttpRequestSpec(StepSpec):
    """`{"type": "httpRequest", "url", "method", "headers", "query", "body", "timeout", ...}`.

    Values may be expressions; secrets come from `env.secrets`, e.g.
    `"headers": {"Authorization": {"expr": "'Bearer ' + env.secrets.apiKey"}}`.
    """

    type: Literal["httpRequest"]
    url: Any
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    headers: dict[str, Any] = Field(default_factory=dict)
    query: Any = None
    body: Any = None
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT)
    max_response_bytes: int = Field(
        default=MAX_RESPONSE_BYTES, ge=1, le=MAX_RESPONSE_BYTES, alias="maxResponseBytes"
    )
    follow_redirects: bool = Field(default=True, alias="followRedirects")
    response_type: Literal["auto", "json", "text"] = Field(default="auto", alias="responseType")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, Any]) -> dict[str, Any]:
        for name in headers:
            problem = _header_name_problem(name)
            if problem:
                raise ValueError(problem)
        return headers

    def compile(self, compiler: Any) -> "HttpRequestStep":
        url = compiler.value(self.url, "url")
        if url.is_literal and not isinstance(url.literal, str):
            raise compiler.error("url", "must be a string")
        query = compiler.value(self.query, "query")
        if query.is_literal and not isinstance(query.literal, dict | None):
            raise compiler.error("query", "must be an object")
        if self.body is not None and self.method in {"GET", "HEAD", "OPTIONS"}:
            raise compiler.error("body", f"a {self.method} request has no body")
        return HttpRequestStep(
            id=self.id,
            type=self.type,
            url=url,
            headers=compiler.value(self.headers, "headers"),
            query=query,
            body=compiler.value(self.body, "body"),
            method=self.method,
            timeout=self.timeout,
            max_response_bytes=self.max_response_bytes,
            follow_redirects=self.follow_redirects,
            response_type=self.response_type,
        )


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


@dataclass(slots=True)
class HttpRequestStep:
    id: str
    type: str
    url: CompiledValue
    headers: CompiledValue
    query: CompiledValue
    body: CompiledValue
    method: str
    timeout: float
    max_response_bytes: int
    follow_redirects: bool
    response_type: str

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        """What a debug trace shows as the step's input (env secrets in it are masked)."""
        return {"url": self.url, "headers": self.headers, "query": self.query, "body": self.body}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        request = self._build(
            self.url.evaluate(variables),
            self.headers.evaluate(variables),
            self.query.evaluate(variables),
            self.body.evaluate(variables),
        )
        budget = ctx.deadline - time.monotonic() if ctx.deadline else self.timeout
        if budget <= 0:
            raise self._out_of_time(ctx)
        limit = min(self.timeout, budget)
        if isinstance(ctx.connection, LazyConnection):
            # The upstream may take its time: the pool's connection waits for no one meanwhile.
            await ctx.connection.let_go(before_wait=True)
        try:
            async with asyncio.timeout(limit):
                return await self._exchange(ctx, request, limit)
        except TimeoutError:
            if budget < self.timeout:
                raise self._out_of_time(ctx) from None
            raise self._fail(
                f"no complete answer within {self.timeout:g}s", "upstream_timeout", 504
            ) from None

    # --- per call ---------------------------------------------------------------------------

    def _out_of_time(self, ctx: RunContext) -> LimitExceededError:
        """The call's own deadline, not the request timeout, cut the request short: the same
        422 the runtime gives when the time budget runs out between steps."""
        budget = ctx.limits.time_budget_seconds
        return LimitExceededError(
            f"The call ran longer than {budget:g} s",
            details={"limit": "time", "max": budget, "stepId": self.id},
        )

    def _fail(self, message: str, reason: str, status: int = 502) -> Exception:
        return step_error(self.id, message, reason=reason, status=status)

    def _build(self, url: Any, headers: Any, query: Any, body: Any) -> _Request:
        if not isinstance(url, str):
            raise step_error(self.id, "url must be a string", reason="invalid_url", field="url")
        if query:
            if not isinstance(query, dict):
                raise step_error(self.id, "query must be an object", field="query")
            url = _with_query(url, query, self.id)
        out_headers = {"user-agent": USER_AGENT, "accept-encoding": "identity"}
        if headers is None:
            headers = {}
        if not isinstance(headers, dict):
            raise step_error(self.id, "headers must be an object", field="headers")
        for name, value in headers.items():
            # Names computed when the call runs (`"headers": {"expr": ...}`) get the checks a
            # literal name got when the API was saved.
            problem = _header_name_problem(name)
            if problem:
                raise step_error(self.id, problem, field="headers")
            if value is None:
                continue
            # Spaces around a value are not part of it (RFC 9110 5.5), and the HTTP library
            # refuses to send them: a 502 blaming the upstream for the author's trailing space.
            text = (value if isinstance(value, str) else self._json(value, "headers")).strip(" \t")
            if any(ch in text for ch in "\r\n\0"):
                raise step_error(self.id, f"header {name!r} contains a line break", field="headers")
            if _CONTROL.search(text):
                raise step_error(
                    self.id, f"header {name!r} contains a control character", field="headers"
                )
            if not text.isascii() or len(text) > 8192:
                raise step_error(
                    self.id,
                    f"header {name!r} must be ASCII, at most 8192 characters",
                    field="headers",
                )
            out_headers[name.lower()] = text
        content: bytes | None = None
        if body is not None:
            if isinstance(body, str):
                content = body.encode()
                out_headers.setdefault("content-type", "text/plain; charset=utf-8")
            else:
                content = self._json(body, "body", ensure_ascii=False).encode()
                out_headers.setdefault("content-type", "application/json")
            if len(content) > MAX_REQUEST_BYTES:
                raise step_error(
                    self.id, f"request body over {MAX_REQUEST_BYTES} bytes", field="body"
                )
        return _Request(self.method, url, out_headers, content)

    def _json(self, value: Any, field: str, *, ensure_ascii: bool = True) -> str:
        """`value` as JSON text. NaN and the infinities (CEL's `1.0 / 0.0`) are refused, as
        `jwtSign` refuses them in claims: Python writes them `NaN`/`Infinity`, which no JSON
        reader takes."""
        try:
            return json.dumps(value, ensure_ascii=ensure_ascii, default=str, allow_nan=False)
        except ValueError:
            raise step_error(
                self.id, f"{field} may hold only finite numbers", field=field
            ) from None

    async def _exchange(self, ctx: RunContext, request: _Request, limit: float) -> Any:
        allow = AllowList(ctx.services.http_allow_hosts)
        # Seams for operators and tests: another resolver (e.g. a split-horizon DNS client) and
        # another certificate store; both default to the system's.
        resolver: Resolver = ctx.services.extra.get("http_resolver") or system_resolver
        transport = httpx.AsyncHTTPTransport(
            verify=ctx.services.extra.get("http_ssl_context") or _default_ssl_context(),
            trust_env=False,
            retries=0,
        )
        timeout = httpx.Timeout(limit)
        async with httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=timeout
        ) as client:
            origin: tuple[str, str, int] | None = None
            for _hop in range(MAX_REDIRECTS + 1):
                try:
                    target, address = await check_url(request.url, allow, resolver)
                except BlockedTargetError as exc:
                    raise self._fail(str(exc), exc.reason, 400) from None
                except NetGuardError as exc:
                    raise self._fail(str(exc), exc.reason, 400) from None
                if origin not in (None, (target.scheme, target.host, target.port)):
                    # The client's cookie jar files cookies under the address connected to, not
                    # the host: another host on the same address (a CDN, shared hosting) would
                    # get them. Cookies an answer set go on to hops of its own origin only.
                    client.cookies.clear()
                origin = (target.scheme, target.host, target.port)
                extensions: dict[str, Any] = {}
                if target.scheme == "https" and target.ip is None:
                    extensions["sni_hostname"] = target.host
                outgoing = client.build_request(
                    request.method,
                    target.url_for(address),
                    headers={**request.headers, "host": target.host_header},
                    content=request.content,
                    extensions=extensions,
                )
                try:
                    response = await client.send(outgoing, stream=True)
                except httpx.TimeoutException:
                    raise TimeoutError from None
                except httpx.HTTPError as exc:
                    raise self._fail(
                        f"request to {target.host} failed: {type(exc).__name__}", "upstream_error"
                    ) from None
                try:
                    location = response.headers.get("location")
                    if self.follow_redirects and response.status_code in _REDIRECTS and location:
                        hop = _redirected(
                            request, response.status_code, location, target, ctx.masked_values
                        )
                        if hop is None:
                            raise self._fail(
                                "a redirect to another origin would resend a body that carries "
                                "a secret",
                                "redirect_refused",
                            )
                        request = hop
                        continue
                    return await self._read(response)
                finally:
                    await response.aclose()
        raise self._fail(f"more than {MAX_REDIRECTS} redirects", "too_many_redirects")

    async def _read(self, response: httpx.Response) -> dict[str, Any]:
        # A HEAD answer (and a 204 or 304) has no body: its Content-Length tells the size of
        # what a GET would have sent, which is often what the call wants to know.
        bodiless = response.request.method == "HEAD" or response.status_code in {204, 304}
        declared = response.headers.get("content-length", "")
        if not bodiless and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise self._too_large()
        # Raw bytes, inflated here a bounded piece at a time: httpx would inflate each network
        # read whole, and 500 bytes of gzip-of-gzip make hundreds of megabytes.
        codings = [
            coding.strip().lower()
            for coding in response.headers.get("content-encoding", "").split(",")
        ]
        inflaters = [_Inflater(coding) for coding in reversed(codings) if coding in _CODINGS]
        if len(inflaters) > MAX_CODINGS:
            # Each layer holds its own inflate window: 3,000 `gzip` in one header line made
            # about 80 MB for a 90 KB answer.
            raise self._fail(
                f"the answer stacks more than {MAX_CODINGS} content codings", "upstream_error"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for raw_chunk in response.aiter_raw():
                chunk = self._inflate(inflaters, raw_chunk, size, final=False)
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise self._too_large()
                chunks.append(chunk)
            chunk = self._inflate(inflaters, b"", size, final=True)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise self._too_large()
            chunks.append(chunk)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise self._fail(
                f"reading the answer failed: {type(exc).__name__}", "upstream_error"
            ) from None
        except zlib.error:
            raise self._fail(
                "reading the answer failed: invalid compressed data", "upstream_error"
            ) from None
        raw = b"".join(chunks)
        headers: dict[str, str] = {}
        for name, value in response.headers.multi_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return {
            "status": response.status_code,
            "headers": headers,
            "body": self._decode(raw, headers.get("content-type", ""), response.encoding),
        }

    def _inflate(self, inflaters: list["_Inflater"], data: bytes, size: int, final: bool) -> bytes:
        """`data` through every coding layer, outermost first; never more than the cap (plus
        `_SLACK` in the middle of stacked codings) is produced, so too much is refused early."""
        room = self.max_response_bytes - size
        for index, inflater in enumerate(inflaters):
            last = index == len(inflaters) - 1
            limit = room if last else self.max_response_bytes + _SLACK
            data = inflater.feed(data, limit)
            if final:
                data += inflater.flush()
            if len(data) > limit:
                raise self._too_large()
        return data

    def _too_large(self) -> Exception:
        return self._fail(
            f"answer larger than {self.max_response_bytes} bytes", "upstream_response_too_large"
        )

    def _decode(self, raw: bytes, content_type: str, encoding: str | None) -> Any:
        text = _text(raw, encoding)
        media = content_type.split(";", 1)[0].strip().lower()
        is_json = media == "application/json" or media.endswith("+json")
        if self.response_type == "text" or (self.response_type == "auto" and not is_json):
            return text
        if not raw:
            return None
        # orjson reads only what every response can carry again: no NaN or infinities, no lone
        # surrogates, integers within 64 bits (larger ones as floats, as JavaScript reads them).
        # Python's reader took all of these, and failed the call with a 500 when writing it.
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            problem = "the answer is not valid JSON"
        else:
            if not _nests_deeper(value, MAX_BODY_DEPTH):
                return value
            problem = f"the answer nests deeper than {MAX_BODY_DEPTH} levels"
        if self.response_type == "json":
            raise self._fail(problem, "upstream_invalid_json")
        return text


class _Inflater:
    """One gzip or deflate layer undone incrementally, each call producing at most `limit + 1`
    bytes (one more than allowed is how the caller learns it is too much)."""

    __slots__ = ("_coding", "_object", "_started")

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._started = False
        self._object = zlib.decompressobj(
            zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS
        )

    def feed(self, data: bytes, limit: int) -> bytes:
        if not data:
            return b""
        try:
            out = self._object.decompress(data, max(limit, 0) + 1)
        except zlib.error:
            if self._coding != "deflate" or self._started:
                raise
            # Some servers send raw deflate without the zlib header (httpx accepts it too).
            self._object = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._object.decompress(data, max(limit, 0) + 1)
        self._started = True
        return out

    def flush(self) -> bytes:
        # Small: `feed` either consumed all its input or produced too much (and the read ended).
        return self._object.flush() if self._started else b""


def _text(raw: bytes, encoding: str | None) -> str:
    """`raw` as text in the answer's charset; UTF-8 when that names no text encoding (`rot13`,
    `base64`, `undefined`: Python knows them, and fails with them). Lone surrogates (which
    `unicode_escape` or `utf-7` can produce) become U+FFFD: no response could carry them."""
    try:
        text = raw.decode(encoding or "utf-8", errors="replace")
    except (LookupError, UnicodeError):
        text = raw.decode("utf-8", errors="replace")
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` nest more than `limit` levels. Iterative: a deep
    answer exhausts no stack."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _header_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        return f"invalid header name {name!r}"
    if name.lower() in _FORBIDDEN_HEADERS:
        return f"header {name!r} is set by the platform"
    return None


def _with_query(url: str, query: dict[str, Any], step_id: str) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if isinstance(item, dict | list):
                raise step_error(step_id, f"query value {key!r} must be a scalar", field="query")
            pairs.append((key, json.dumps(item) if isinstance(item, bool) else str(item)))
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "http://[::1": the guard would refuse it too, with this reason
        message = f"invalid url: {exc}"
        raise step_error(step_id, message, reason="invalid_url", field="url") from None
    extra = urlencode(pairs)
    joined = f"{parts.query}&{extra}" if parts.query and extra else parts.query or extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))


def _carries_secret(text: str, secrets: tuple[str, ...]) -> bool:
    """Whether `text` shows one of the call's secrets (the rule `Masker.text` masks by)."""
    return any(
        text == secret or (len(secret) >= MIN_SUBSTRING_MASK and secret in text)
        for secret in secrets
        if secret
    )


def _redirected(
    request: _Request, status: int, location: str, target: Target, secrets: tuple[str, ...]
) -> _Request | None:
    """The next hop: RFC 9110 method rules. When the origin changes, credentials and every header
    carrying a secret (an API key in `X-Api-Key`, say) stay behind, and a body that is resent
    (307/308) must carry none: None refuses the hop rather than hand a secret to a host the API's
    author never named."""
    here = f"{target.scheme}://{target.host_header}{target.target}"
    url = urljoin(here, location)
    method, content, headers = request.method, request.content, dict(request.headers)
    if status == 303 or (status in {301, 302} and method == "POST"):
        if method != "HEAD":
            method = "GET"
        content = None
        headers.pop("content-type", None)
    try:
        new = parse_url(url)
        same_origin = (new.scheme, new.host, new.port) == (target.scheme, target.host, target.port)
    except NetGuardError:
        same_origin = False  # the next hop's check refuses it; nothing is sent
    if same_origin:
        return _Request(method, url, headers, content)
    if content is not None and _carries_secret(content.decode(errors="replace"), secrets):
        return None
    for name in list(headers):
        if name in _CREDENTIAL_HEADERS or _carries_secret(headers[name], secrets):
            del headers[name]
    return _Request(method, url, headers, content)


STEPS: dict[str, type[StepSpec]] = {"httpRequest": HttpRequestSpec}
