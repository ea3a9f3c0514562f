"""`/api/v1/version` under review: a release marked `[YANKED]` is listed as such and never
offered as the update."""

from pathlib import Path

from apiforge.core.settings import Settings
from tests.factories import app_client

YANKED = """\
# Changelog

## [Unreleased]
- Next.

## [9.2.0] - 2030-03-01 [YANKED]
### Fixed
- Pulled: it lost data.

## [9.1.0] - 2030-02-01
### Added
- Kept.
"""


async def test_a_yanked_release_is_marked_and_never_the_latest(
    settings: Settings, tmp_path: Path
) -> None:
    notes = tmp_path / "CHANGELOG.md"
    notes.write_text(YANKED)
    async with app_client(settings.model_copy(update={"changelog_path": notes})) as (_app, http):
        response = await http.get("/api/v1/version")
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["latestVersion"], data["releaseDate"]) == ("9.1.0", "2030-02-01")
    assert data["updateAvailable"] == 1
    assert [(r["version"], r["yanked"]) for r in data["releaseList"]] == [
        ("9.2.0", 1),
        ("9.1.0", 0),
    ]
