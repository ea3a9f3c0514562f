"""How an app's stored limits resolve per API: API values replace the app's, frequency counts
per API, and a concurrency counter is named by the level that set it."""

from apiforge.traffic.rules import NO_LIMITS, ApiLimits, resolve


def test_app_values_apply_to_every_api_and_count_concurrency_over_the_app() -> None:
    limits = resolve("app1", {"ipPerMinute": 100, "concurrent": 5, "concurrentPerKey": 2})
    expected = ApiLimits(ip_per_minute=100, concurrent_per_key=(2, "app1"), concurrent=(5, "app1"))
    assert limits.of("anyApi") == expected
    assert limits.of("another") == expected


def test_api_values_replace_the_apps_and_count_that_api_alone() -> None:
    document = {
        "keyPerMinute": 60,
        "concurrent": 10,
        "apis": {"slow": {"concurrent": 2, "ipPerMinute": 5}, "fast": {"keyPerMinute": 600}},
    }
    limits = resolve("app1", document)
    assert limits.of("slow") == ApiLimits(
        ip_per_minute=5, key_per_minute=60, concurrent=(2, "app1/slow")
    )
    assert limits.of("fast") == ApiLimits(key_per_minute=600, concurrent=(10, "app1"))
    assert limits.of("other") == ApiLimits(key_per_minute=60, concurrent=(10, "app1"))


def test_an_empty_document_limits_nothing() -> None:
    assert resolve("app1", {}).of("x") == NO_LIMITS
    assert resolve("app1", {"apis": {}}).of("x") == NO_LIMITS
