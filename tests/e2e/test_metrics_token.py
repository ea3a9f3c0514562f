"""`APIFORGE_METRICS_TOKEN`: `/metrics` shows every tenant's route templates, volumes and
refusals together, so an operator can require a bearer token for it."""

import pytest

from apiforge.core.settings import InvalidSettingsError, Settings
from tests.factories import app_client

pytestmark = pytest.mark.anyio

TOKEN = "scrape-" + "k" * 24


async def test_metrics_are_open_when_no_token_is_set(settings: Settings) -> None:
    async with app_client(settings) as (_app, client):
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "apiforge_http_requests_total" in response.text


async def test_metrics_need_the_token_when_one_is_set(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"metrics_token": Settings(metrics_token=TOKEN).metrics_token}
    )
    async with app_client(configured) as (_app, client):
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-of-some-length"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
            {"X-Api-Key": TOKEN},
        ):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["data"]["error"] == "unauthenticated"
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "apiforge_http_requests_total" not in refused.text
        for scheme in ("Bearer", "bearer"):
            answered = await client.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
            assert answered.status_code == 200
            assert "apiforge_http_requests_total" in answered.text
        # The other system routes stay open: probes carry no token.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_leaves_metrics_open(value: str) -> None:
    assert Settings(metrics_token=value).metrics_token is None


def test_a_short_token_is_refused_and_never_printed() -> None:
    with pytest.raises(InvalidSettingsError, match="METRICS_TOKEN") as caught:
        Settings(metrics_token="hunter2")
    assert "hunter2" not in str(caught.value)


def test_the_token_is_kept_out_of_the_settings_repr() -> None:
    assert TOKEN not in repr(Settings(metrics_token=TOKEN))
