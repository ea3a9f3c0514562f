"""CHANGELOG.md (Keep a Changelog) as data: where it lives, how it parses, cached per file version.

The parser is deliberately small and forgiving: a heading it cannot read is skipped together with
its section rather than failing `/api/v1/version`, because a typo in release notes must never take
an endpoint down.
"""

import re
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import structlog

import apiforge
from apiforge.core.settings import Settings

log = structlog.get_logger("apiforge.changelog")

# `## [1.2.3] - 2024-05-01`, `## v1.2.3 - 2024-05-01`, `... [YANKED]`, or no date; the separator may
# also be an en or em dash, as editors like to substitute.
_VERSION = r"v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
_RELEASE = re.compile(
    rf"^##\s+(?:\[(?P<bracketed>{_VERSION})\]|(?P<bare>{_VERSION}))"
    r"(?:\s+[-\u2013\u2014]\s+(?P<date>\d{4}-\d{2}-\d{2}))?(?P<yanked>\s+\[YANKED\])?\s*$",
    re.IGNORECASE,
)
_SEMVER = re.compile(
    r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$", re.IGNORECASE
)
_SECTION = re.compile(r"^##(?!#)")
_SUBSECTION = re.compile(r"^###(?!#)\s*(?P<name>.*)$")
_BULLET = re.compile(r"^[-*+]\s+(?P<text>.*)$")
UNCATEGORISED = "other"


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    date: str | None  # YYYY-MM-DD as written; None when missing or not a real date
    changes: dict[str, list[str]] = field(default_factory=dict)
    yanked: bool = False  # `[YANKED]`: pulled, listed for the record, never one to update to


def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]] | None:
    """A sort key implementing SemVer 2.0 precedence; None when `version` is not SemVer.

    A release sorts after its pre-releases (the fourth field); pre-release identifiers compare
    numerically when numeric and numeric ones sort before alphanumeric ones (SemVer §11).
    """
    match = _SEMVER.match(version.strip())
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    try:  # int() refuses over 4,300 digits (CPython's conversion limit): not a version to read
        if pre is None:
            return int(major), int(minor), int(patch), 1, ()
        parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        return int(major), int(minor), int(patch), 0, parts
    except ValueError:
        return None


def is_newer(candidate: str | None, running: str) -> bool:
    """True when `candidate` is a strictly higher SemVer than `running` (False if either isn't)."""
    if candidate is None:
        return False
    new, current = semver_key(candidate), semver_key(running)
    return new is not None and current is not None and new > current


def _category(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", heading.lower()).strip("_")


def _valid_date(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


def parse_changelog(text: str) -> list[Release]:
    """Releases in the text, newest (highest SemVer) first.

    `## [Unreleased]` and any other `##` heading that is not a version start a section that is
    skipped. `### Added` etc. name a category (lowercased); bullets before any `###` land in
    `other`. A bullet's continuation lines join it with a space, as Markdown reads them: indented
    lines (nested bullets included) even after a blank line, unindented ones only before one.
    """
    releases: list[Release] = []
    current: Release | None = None
    category = UNCATEGORISED
    item: list[str] | None = None  # the bullet being assembled, as lines
    gap = False  # a blank line since the bullet started

    def close_item() -> None:
        nonlocal item
        if current is not None and item is not None:
            entry = " ".join(part for part in item if part)
            if entry:
                current.changes.setdefault(category, []).append(entry)
        item = None

    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if _SECTION.match(line):  # any level-2 heading, even a malformed one, ends a release
            close_item()
            match = _RELEASE.match(line)
            current = None
            category = UNCATEGORISED
            version = (match["bracketed"] or match["bare"]).lstrip("vV") if match else ""
            if match and semver_key(version) is not None:
                current = Release(
                    version, _valid_date(match["date"]), yanked=match["yanked"] is not None
                )
                releases.append(current)
            continue
        if current is None:
            continue
        subsection = _SUBSECTION.match(line)
        if subsection:
            close_item()
            category = _category(subsection["name"]) or UNCATEGORISED
            continue
        if line.startswith("#"):  # `#` or `####`: not part of a release's notes
            close_item()
            continue
        bullet = _BULLET.match(line)
        if bullet:
            close_item()
            item, gap = [bullet["text"].strip()], False
        elif not stripped:
            gap = True
        elif item is not None and (raw[:1] in (" ", "\t") or not gap):
            item.append(stripped)  # indented continuation, or Markdown's lazy continuation line
        else:
            close_item()  # a paragraph after a blank line ends the bullet and is not a change
    close_item()
    releases.sort(key=lambda r: semver_key(r.version) or (0, 0, 0, 0, ()), reverse=True)
    return releases


def locate_changelog(settings: Settings) -> Path | Traversable | None:
    """`settings.changelog_path`, else the repository's copy (editable install), else the copy
    packaged into the wheel; None when none exists."""
    if settings.changelog_path is not None:
        return settings.changelog_path
    package_dir = Path(apiforge.__file__).resolve().parent
    if package_dir.parent.name == "src":  # src layout checkout: repo root holds CHANGELOG.md
        checkout = package_dir.parents[1] / "CHANGELOG.md"
        if checkout.is_file():
            return checkout
    packaged = resources.files("apiforge") / "CHANGELOG.md"
    return packaged if packaged.is_file() else None


def load_releases(settings: Settings) -> tuple[Release, ...]:
    """Parsed releases of the located changelog; parsed once per (path, mtime)."""
    source = locate_changelog(settings)
    if source is None:
        log.warning("changelog_missing")
        return ()
    key = str(source)
    try:
        # A packaged resource that is not a plain file (zip import) cannot change: version 0.
        version = source.stat().st_mtime_ns if isinstance(source, Path) else 0
        cached = _cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        text = source.read_text(encoding="utf-8-sig")  # an editor's BOM would hide line 1
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("changelog_unreadable", path=key, error=str(exc))
        return ()
    releases = tuple(parse_changelog(text))
    _cache[key] = (version, releases)
    return releases


_cache: dict[str, tuple[int, tuple[Release, ...]]] = {}
