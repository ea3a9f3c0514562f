"""Request logs and metrics, review: what `/metrics` and the access lines name a request by."""

import json
import re

import pytest

from apiforge.core.settings import Settings
from tests.factories import app_client, register


def _metric(text: str, name: str, labels: dict[str, str]) -> float:
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(rendered)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_head_and_overridden_requests_are_counted_and_logged_under_their_route(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """HEAD runs the GET route, `X-HTTP-Method-Override` the overriding method's, each on a copy
    of the request's scope: the route the router found there still names the request in
    `/metrics` and in its access line, not `unmatched` (load balancers probe with HEAD)."""
    async with app_client(settings.model_copy(update={"log_level": "INFO"})) as (_app, client):
        user = await register(client)
        cases = [
            ("HEAD", "/healthz", {}, "/healthz", "200"),
            ("HEAD", "/api/v1/user/profile", user.headers, "/api/v1/user/profile", "200"),
            (
                "POST",
                "/api/v1/apps/0123456789abcdefghjkmnpqrs",
                {**user.headers, "X-HTTP-Method-Override": "DELETE"},
                "/api/v1/apps/{app_id}",
                "404",
            ),
        ]

        def counts(text: str) -> list[float]:
            return [
                _metric(
                    text,
                    "apiforge_http_requests_total",
                    {"method": method, "route": route, "status": status},
                )
                for method, _path, _headers, route, status in cases
            ]

        before = counts((await client.get("/metrics")).text)
        capsys.readouterr()
        for method, path, headers, _route, status in cases:
            response = await client.request(method, path, headers=headers)
            assert str(response.status_code) == status, path
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
        after = counts((await client.get("/metrics")).text)
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    access = [(line["method"], line["route"]) for line in lines if line.get("event") == "request"]
    assert access == [(method, route) for method, _path, _headers, route, _status in cases]


async def test_a_metrics_token_beyond_ascii_is_accepted_as_a_scraper_sends_it(
    settings: Settings,
) -> None:
    """A scraper sends the configured token's UTF-8 bytes; the server reads header bytes as
    latin-1, so they must be compared as bytes, not re-encoded (which never matched)."""
    token = "schlüssel-für-prometheus-voilà"  # à ends in 0xA0, a latin-1 space
    configured = settings.model_copy(
        update={"metrics_token": Settings(metrics_token=token).metrics_token}
    )
    async with app_client(configured) as (_app, client):
        answered = await client.get(
            "/metrics", headers={b"Authorization": b"Bearer " + token.encode()}
        )
        assert answered.status_code == 200
        assert "apiforge_http_requests_total" in answered.text
        for wrong in (b"Bearer " + token.encode("latin-1"), b"Bearer " + token[:-1].encode()):
            refused = await client.get("/metrics", headers={b"Authorization": wrong})
            assert refused.status_code == 401
