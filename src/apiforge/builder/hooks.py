"""How builder changes reach this process's gateway caches."""

from collections.abc import Callable, Sequence

from fastapi import Request

from apiforge.engine.loader import ApiLoader
from apiforge.engine.secrets import SecretCache
from apiforge.keys.lookup import KeyLookup


def app_changed_hook(request: Request) -> Callable[[str], None]:
    """Forget an app in the gateway's resolve cache (`ApiLoader.forget_app`), in the cached
    subscription answers (`KeyLookup.forget_app`: they hold its visibility) and in its signing
    secrets (`SecretCache.forget`); services call it after their commit, so this node sees an
    env change, a publish, a deprecation, the app made private or its secret rotated at once
    (other nodes: within their caches' TTL)."""
    loader: ApiLoader = request.app.state.engine_state.loader
    secrets: SecretCache = request.app.state.engine_state.secrets
    keys: KeyLookup = request.app.state.keys

    def forget(app_id: str) -> None:
        loader.forget_app(app_id)
        secrets.forget(app_id)
        keys.forget_app(app_id)

    return forget


def collections_changed_hook(request: Request) -> Callable[[str], None]:
    """Have the app's published versions read their collections' versions again at their next
    call on this node (`ApiLoader.forget_collections`, called with the app id), after a dataset
    saved or deleted commits (other nodes: within a second)."""
    loader: ApiLoader = request.app.state.engine_state.loader
    return loader.forget_collections


def workspaces_gone_hook(request: Request) -> Callable[[Sequence[str]], None]:
    """Forget deleted workspaces' keys and subscription answers on this node
    (`KeyLookup.forget_workspaces`), after the deletion commits."""
    keys: KeyLookup = request.app.state.keys
    return keys.forget_workspaces


def member_changed_hook(request: Request) -> Callable[[str, str], None]:
    """Forget the `ws-` keys of a member removed from a workspace or given another role there (a
    role change, either side of an ownership transfer) on this node (`KeyLookup.forget_member`,
    called with the workspace and account ids), after the change commits."""
    keys: KeyLookup = request.app.state.keys
    return keys.forget_member
