"""CHANGELOG.md parsing, SemVer ordering, location and the per-(path, mtime) cache."""

import os
from pathlib import Path

import pytest

import apiforge
from apiforge.core.settings import Settings
from apiforge.system.changelog import (
    Release,
    is_newer,
    load_releases,
    locate_changelog,
    parse_changelog,
    semver_key,
)
from apiforge.system.service import version_info

SAMPLE = """\
# Changelog

All notable changes are recorded here.

## [Unreleased]

### Added
- Something not released yet.

## [1.1.0] - 2025-03-02

### Added
- Webhooks for task completion,
  with retries and a signature header.
- Search across APIs.

### Fixed
* Pagination skipped the last page
  when `pageSize` divided the total.

### Security
- Rotate refresh tokens on every use.

## [1.0.0] - 2025-01-15

### Changed
- First stable release.
  - Nested detail kept with its parent.

### Removed
- The `/v0` endpoints.

[Unreleased]: https://example.com/compare/v1.1.0...HEAD
[1.1.0]: https://example.com/compare/v1.0.0...v1.1.0
"""


def test_released_sections_parse_newest_first_without_unreleased() -> None:
    releases = parse_changelog(SAMPLE)
    assert [r.version for r in releases] == ["1.1.0", "1.0.0"]
    newest = releases[0]
    assert newest.date == "2025-03-02"
    assert newest.changes == {
        "added": [
            "Webhooks for task completion, with retries and a signature header.",
            "Search across APIs.",
        ],
        "fixed": ["Pagination skipped the last page when `pageSize` divided the total."],
        "security": ["Rotate refresh tokens on every use."],
    }
    assert releases[1].changes == {
        "changed": ["First stable release. - Nested detail kept with its parent."],
        "removed": ["The `/v0` endpoints."],
    }


def test_link_references_and_paragraphs_are_not_changes() -> None:
    text = (
        "## [2.0.0] - 2025-05-05\n### Added\n- One,\nlazily continued.\n\n"
        "A closing paragraph.\n  Indented, still a paragraph.\n\n[2.0.0]: https://x\n"
    )
    assert parse_changelog(text)[0].changes == {"added": ["One, lazily continued."]}


@pytest.mark.parametrize(
    "heading",
    [
        "## [not-a-version] - 2025-01-01",
        "## [1.0] - 2025-01-01",
        "## Release 3.0.0",
        "## [3.0.0] - yesterday",
        "##[3.0.0] - 2025-01-01",
        "## [3.0.0.1] - 2025-01-01",
        "## [3.0.0 - 2025-01-01",
    ],
)
def test_malformed_heading_is_ignored_with_its_section(heading: str) -> None:
    text = f"## [1.0.0] - 2025-01-01\n### Added\n- Kept.\n\n{heading}\n### Added\n- Dropped.\n"
    releases = parse_changelog(text)
    assert [r.version for r in releases] == ["1.0.0"]
    assert releases[0].changes == {"added": ["Kept."]}


@pytest.mark.parametrize(
    ("heading", "version", "day", "yanked"),
    [
        ("## [1.2.3] - 2025-02-03", "1.2.3", "2025-02-03", False),
        ("## 1.2.3 - 2025-02-03", "1.2.3", "2025-02-03", False),
        ("## [v1.2.3] - 2025-02-03", "1.2.3", "2025-02-03", False),
        ("## [1.2.3] \u2013 2025-02-03", "1.2.3", "2025-02-03", False),
        ("## [1.2.3] - 2025-02-03 [YANKED]", "1.2.3", "2025-02-03", True),
        ("## [1.2.3] [yanked]", "1.2.3", None, True),
        ("## [1.2.3]", "1.2.3", None, False),
        ("## [1.2.3] - 2025-02-30", "1.2.3", None, False),
        ("## [2.0.0-rc.1+build.5] - 2025-02-03", "2.0.0-rc.1+build.5", "2025-02-03", False),
    ],
)
def test_heading_variants(heading: str, version: str, day: str | None, yanked: bool) -> None:
    assert parse_changelog(f"{heading}\n### Fixed\n- A fix.\n") == [
        Release(version, day, {"fixed": ["A fix."]}, yanked=yanked)
    ]


def test_bullets_before_any_category_are_other_and_blank_line_keeps_continuation() -> None:
    text = "## [1.0.0] - 2025-01-01\n- Loose entry\n\n  continued after a blank line.\n- Next.\n"
    assert parse_changelog(text)[0].changes == {
        "other": ["Loose entry continued after a blank line.", "Next."]
    }


def test_unknown_category_is_kept_lowercased_and_empty_release_has_no_changes() -> None:
    text = "## [1.0.1] - 2025-01-02\n### Performance Work\n- Faster.\n## [1.0.0] - 2025-01-01\n"
    releases = parse_changelog(text)
    assert releases[0].changes == {"performance_work": ["Faster."]}
    assert releases[1] == Release("1.0.0", "2025-01-01", {})


def test_empty_or_headless_text_has_no_releases() -> None:
    assert parse_changelog("") == []
    assert parse_changelog("# Changelog\n- stray bullet\n") == []


def test_order_is_semver_precedence_not_file_order() -> None:
    text = "".join(
        f"## [{v}] - 2025-01-01\n"
        for v in ["0.9.0", "0.10.0", "1.0.0-rc.1", "1.0.0", "1.0.0-alpha", "1.0.0-alpha.2"]
    )
    assert [r.version for r in parse_changelog(text)] == [
        "1.0.0",
        "1.0.0-rc.1",
        "1.0.0-alpha.2",
        "1.0.0-alpha",
        "0.10.0",
        "0.9.0",
    ]


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9.9", "1.10.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
    ],
)
def test_semver_precedence(smaller: str, larger: str) -> None:
    small, large = semver_key(smaller), semver_key(larger)
    assert small is not None
    assert large is not None
    assert small < large
    assert is_newer(larger, smaller)
    assert not is_newer(smaller, larger)


def test_is_newer_is_false_for_equal_missing_or_non_semver() -> None:
    assert not is_newer("1.0.0", "1.0.0")
    assert not is_newer(None, "1.0.0")
    assert not is_newer("2.0.0", "dev")
    assert semver_key("1.0") is None


def test_configured_path_wins(tmp_path: Path) -> None:
    path = tmp_path / "NOTES.md"
    assert locate_changelog(Settings(changelog_path=path)) == path


def test_checkout_changelog_is_found_next_to_src() -> None:
    repo = Path(apiforge.__file__).resolve().parents[2]
    assert locate_changelog(Settings()) == repo / "CHANGELOG.md"


def test_repository_changelog_has_notes_for_the_running_version() -> None:
    """A release must come with its CHANGELOG.md section (the /version endpoint reads it)."""
    releases = load_releases(Settings())
    assert apiforge.__version__ in [r.version for r in releases]
    assert all(r.date is not None for r in releases)


def test_parsed_once_per_mtime_and_reparsed_on_change(tmp_path: Path) -> None:
    path = tmp_path / "CHANGELOG.md"
    path.write_text("## [1.0.0] - 2025-01-01\n- One.\n")
    settings = Settings(changelog_path=path)
    first = load_releases(settings)
    assert load_releases(settings) is first
    path.write_text("## [1.1.0] - 2025-02-01\n- Two.\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert [r.version for r in load_releases(settings)] == ["1.1.0"]


def test_missing_or_undecodable_changelog_gives_no_releases(tmp_path: Path) -> None:
    assert load_releases(Settings(changelog_path=tmp_path / "absent.md")) == ()
    garbled = tmp_path / "garbled.md"
    garbled.write_bytes(b"## [1.0.0] - 2025-01-01\n- \xff\xfe\n")
    assert load_releases(Settings(changelog_path=garbled)) == ()


def test_version_info_reports_an_available_update(tmp_path: Path) -> None:
    path = tmp_path / "CHANGELOG.md"
    path.write_text(SAMPLE)
    info = version_info(Settings(changelog_path=path), running="1.0.0")
    body = info.model_dump(by_alias=True)
    assert body["version"] == "1.0.0"
    assert body["latestVersion"] == "1.1.0"
    assert body["releaseDate"] == "2025-03-02"
    assert body["updateAvailable"] == 1
    assert [r["version"] for r in body["releaseList"]] == ["1.1.0", "1.0.0"]
    assert version_info(Settings(changelog_path=path), running="1.1.0").update_available is False
    assert version_info(Settings(changelog_path=path), running="2.0.0").update_available is False


def test_version_info_without_changelog(tmp_path: Path) -> None:
    info = version_info(Settings(changelog_path=tmp_path / "none.md"), running="1.0.0")
    assert info.model_dump(by_alias=True) == {
        "version": "1.0.0",
        "latestVersion": None,
        "releaseDate": None,
        "updateAvailable": 0,
        "releaseList": [],
    }


def test_a_yanked_release_is_listed_but_never_the_update(tmp_path: Path) -> None:
    """Keep a Changelog's `[YANKED]`: a release pulled for a serious bug. It stays in the list,
    marked, and the newest release that was not pulled is the one to update to."""
    path = tmp_path / "CHANGELOG.md"
    path.write_text(
        "## [1.2.0] - 2025-03-01 [YANKED]\n- Broke sign-in.\n"
        "## [1.1.0] - 2025-02-01\n- Fine.\n## [1.0.0] - 2025-01-01\n- First.\n"
    )
    body = version_info(Settings(changelog_path=path), running="1.0.0").model_dump(by_alias=True)
    assert body["latestVersion"] == "1.1.0"
    assert body["releaseDate"] == "2025-02-01"
    assert body["updateAvailable"] == 1
    assert [(r["version"], r["yanked"]) for r in body["releaseList"]] == [
        ("1.2.0", 1),
        ("1.1.0", 0),
        ("1.0.0", 0),
    ]
    # Running the newest release that stands: nothing to update to, though 1.2.0 is higher.
    assert version_info(Settings(changelog_path=path), running="1.1.0").update_available is False
    only_yanked = tmp_path / "YANKED.md"
    only_yanked.write_text("## [1.0.0] - 2025-01-01 [YANKED]\n- Pulled.\n")
    info = version_info(Settings(changelog_path=only_yanked), running="0.9.0")
    assert (info.latest_version, info.release_date, info.update_available) == (None, None, False)
    assert [r.version for r in info.release_list] == ["1.0.0"]


def test_a_byte_order_mark_does_not_hide_the_first_release(tmp_path: Path) -> None:
    """Editors on some systems save UTF-8 with a BOM: the first heading is still a release."""
    path = tmp_path / "CHANGELOG.md"
    path.write_bytes(b"\xef\xbb\xbf## [1.2.0] - 2026-01-02\n### Added\n- one\n")
    releases = load_releases(Settings(changelog_path=path))
    assert [(r.version, r.date) for r in releases] == [("1.2.0", "2026-01-02")]
