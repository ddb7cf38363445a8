"""`GET /v1/usage` (one's own; `?user=` for admins) and admins' quota routes."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.accounts.users import NoSuchUser
from api.dependencies import Admin, CurrentUser, Quotas, Usage, Users
from api.errors import HearthError, error_responses
from api.usage.store import DEFAULT, Periods, Quota, QuotaStore, UsageStore

router = APIRouter(prefix="/v1", tags=["usage"], responses=error_responses(400, 401, 403, 404, 500, 503))

Name = Annotated[str, Path(max_length=64)]


def left(quota: Quota, periods: Periods) -> dict[str, int | None]:
    """What remains of each limit that is set (None: no limit)."""
    def rest(limit: int | None, used: int) -> int | None:
        return None if limit is None else max(0, limit - used)

    today, month = periods.today.get("total", {}), periods.month.get("total", {})
    return {"tokens_today": rest(quota.tokens_per_day, today.get("tokens", 0)),
            "tokens_this_month": rest(quota.tokens_per_month, month.get("tokens", 0)),
            "batch_lines_today": rest(quota.batch_lines_per_day, today.get("batch_lines", 0))}


async def usage_of(name: str, usage: UsageStore, quotas: QuotaStore) -> dict[str, object]:
    moment = await usage.now()
    periods = await usage.periods(name, moment)
    quota = await quotas.effective(name)
    return {"object": "hearth.usage", "user": name, "timezone": usage.clock.zone.key, "day": moment.date().isoformat(),
            **periods.model_dump(), "quota": quota.model_dump(), "left": left(quota, periods),
            "resets": {"day": usage.clock.next_day(moment).isoformat(), "month": usage.clock.next_month(moment).isoformat()}}


@router.get("/usage")
async def get_usage(user: CurrentUser, usage: Usage, quotas: Quotas, users: Users,
                    name: Annotated[str | None, Query(alias="user", max_length=64)] = None) -> dict[str, object]:
    """Requests, tokens (prompt, cached, completion; `tokens` is what quotas count) and batch
    lines, by model and in `total`, for today, this week (from Monday) and this month, in
    `USAGE_TIMEZONE`; with the quota and what is left of it."""
    if name is not None and name != user.name:
        if not user.is_admin:
            raise HearthError(403, "Only an admin may see another person's usage.", "permission_error", "admin_only")
        if not await users.exists(name):
            raise NoSuchUser(name)
    return await usage_of(name or user.name, usage, quotas)


@router.get("/admin/quotas")
async def list_quotas(admin: Admin, quotas: Quotas) -> dict[str, object]:
    """The default for everyone and each person's own limits (unset ones take the default's)."""
    every = await quotas.all()
    return {"default": every.pop(DEFAULT, Quota()).model_dump(), "people": {n: q.model_dump() for n, q in sorted(every.items())}}


@router.put("/admin/quotas/default")
async def set_default_quota(body: Quota, admin: Admin, quotas: Quotas) -> dict[str, object]:
    await quotas.set(admin, body)
    return body.model_dump()


@router.put("/admin/users/{name}/quota")
async def set_quota(name: Name, body: Quota, admin: Admin, quotas: Quotas, users: Users) -> dict[str, object]:
    if not await users.exists(name):
        raise NoSuchUser(name)
    await quotas.set(admin, body, name)
    return {"user": name, **body.model_dump()}


@router.delete("/admin/users/{name}/quota")
async def clear_quota(name: Name, admin: Admin, quotas: Quotas) -> dict[str, object]:
    """The person's own limits go: the default's apply."""
    return {"user": name, "cleared": await quotas.clear(admin, name)}
