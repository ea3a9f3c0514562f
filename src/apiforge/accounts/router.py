"""`/api/v1/auth/*` (console sign-in) and `/api/v1/user/profile`."""

from fastapi import APIRouter, Request, Response

from apiforge.accounts.deps import AccountServiceDep, CurrentAccount
from apiforge.accounts.schemas import (
    LoginInput,
    LogoutInput,
    ProfileRead,
    ProfileUpdate,
    RefreshInput,
    RegisterInput,
    TokenPair,
)
from apiforge.http.deps import client_ip
from apiforge.http.envelope import Envelope, ok
from apiforge.idempotency.locking import IfMatch, set_etag

router = APIRouter(prefix="/api/v1", tags=["accounts"])


@router.post("/auth/register", summary="Create an account and its personal workspace")
async def register(body: RegisterInput, service: AccountServiceDep) -> Envelope[TokenPair]:
    return ok(await service.register(body))


@router.post("/auth/login", summary="Sign in with email and password")
async def login(
    body: LoginInput, request: Request, service: AccountServiceDep
) -> Envelope[TokenPair]:
    return ok(await service.login(body.email, body.password, client_ip(request)))


@router.post("/auth/refresh", summary="Exchange a refresh token for a new pair (rotation)")
async def refresh(body: RefreshInput, service: AccountServiceDep) -> Envelope[TokenPair]:
    return ok(await service.refresh(body.refresh_token))


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
