"""`/api/v1/auth/*` (console sign-in), `/api/v1/user/profile`, `/password` and `/sessions`."""

from fastapi import APIRouter, Request, Response

from apiforge.accounts.deps import (
    AccountServiceDep,
    CurrentAccount,
    SessionServiceDep,
    sign_in_client,
    sign_in_ip,
)
from apiforge.accounts.schemas import (
    LoginInput,
    LogoutInput,
    PasswordChange,
    PasswordChanged,
    ProfileRead,
    ProfileUpdate,
    RefreshInput,
    RegisterInput,
    SessionRead,
    TokenPair,
)
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.idempotency.locking import IfMatch, set_etag

router = APIRouter(prefix="/api/v1", tags=["accounts"])


@router.post("/auth/register", summary="Create an account and its personal workspace")
async def register(
    body: RegisterInput, request: Request, service: AccountServiceDep
) -> Envelope[TokenPair]:
    return ok(await service.register(body, sign_in_client(request)))


@router.post("/auth/login", summary="Sign in with email and password")
async def login(
    body: LoginInput, request: Request, service: AccountServiceDep
) -> Envelope[TokenPair]:
    return ok(await service.login(body.email, body.password, sign_in_client(request)))


@router.post("/auth/refresh", summary="Exchange a refresh token for a new pair (rotation)")
async def refresh(
    body: RefreshInput, request: Request, service: AccountServiceDep
) -> Envelope[TokenPair]:
    return ok(await service.refresh(body.refresh_token, sign_in_client(request)))


@router.post("/auth/logout", summary="End the current session; its tokens stop working")
async def logout(
    request: Request,
    account: CurrentAccount,
    service: AccountServiceDep,
    body: LogoutInput | None = None,
) -> Envelope[dict[str, str]]:
    await service.logout(request.state.session_id)
    return ok({"id": request.state.session_id})


@router.get("/user/profile", summary="The signed-in account's profile")
async def get_profile(account: CurrentAccount, response: Response) -> Envelope[ProfileRead]:
    return ok(set_etag(response, ProfileRead.model_validate(account)))


@router.patch("/user/profile", summary="Change name, avatar or locale")
async def update_profile(
    body: ProfileUpdate,
    account: CurrentAccount,
    service: AccountServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[ProfileRead]:
    updated = await service.update_profile(account, body, if_match)
    return ok(set_etag(response, ProfileRead.model_validate(updated)))


@router.post(
    "/user/password",
    summary="Change the password (needs the current one); every other session is ended",
)
async def change_password(
    body: PasswordChange, request: Request, account: CurrentAccount, service: AccountServiceDep
) -> Envelope[PasswordChanged]:
    session_id: str = request.state.session_id
    return ok(await service.change_password(account, session_id, body, sign_in_ip(request)))


@router.get("/user/sessions", summary="The account's active sign-in sessions, current one marked")
async def list_sessions(
    request: Request, account: CurrentAccount, service: SessionServiceDep, page: PageDep
) -> Envelope[Page[SessionRead]]:
    return ok(await service.list_sessions(account.id, request.state.session_id, page))


@router.delete(
    "/user/sessions/{session_id}", summary="End one of the account's sessions; its tokens stop"
)
async def end_session(
    session_id: str, account: CurrentAccount, service: SessionServiceDep
) -> Envelope[dict[str, str]]:
    await service.end_session(account.id, session_id)
    return ok({"id": session_id})
