"""What `/api/v1/version` answers: the running version against the releases in CHANGELOG.md."""

from apiforge import __version__
from apiforge.core.settings import Settings
from apiforge.system.changelog import is_newer, load_releases
from apiforge.system.schemas import PlatformVersionRead, ReleaseRead


def version_info(settings: Settings, running: str = __version__) -> PlatformVersionRead:
    """The newest release is the highest SemVer in the changelog, not the first heading, so a
    misordered file still answers correctly, and never a yanked one: a release pulled for a
    serious bug must not be offered as the update. With no readable changelog the list is
    empty."""
    releases = load_releases(settings)
    latest = next((r for r in releases if not r.yanked), None)
    return PlatformVersionRead(
        version=running,
        latest_version=latest.version if latest else None,
        release_date=latest.date if latest else None,
        update_available=is_newer(latest.version if latest else None, running),
        release_list=[
            ReleaseRead(version=r.version, date=r.date, yanked=r.yanked, changes=r.changes)
            for r in releases
        ],
    )
