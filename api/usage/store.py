"""Reading usage (today, this week, this month) and keeping each person's quota."""

import json
import logging
from datetime import datetime

from pydantic import BaseModel, Field
from redis.asyncio import Redis as AsyncRedis

from api.accounts.users import User
from hearth.redis_client import text
from hearth.usage import UsageClock, day_of, month_of, totals, usage_key, week_days

log = logging.getLogger(__name__)

QUOTAS_KEY = "hearth:quotas"  # hash: user name (or DEFAULT) -> Quota JSON
DEFAULT = "*"  # no user name has a '*'


class Quota(BaseModel):
    """A person's limits; None: no limit (for a person: the default's)."""

    tokens_per_day: int | None = Field(None, ge=0, description="Prompt tokens evaluated (cached ones are free) plus completion tokens, per day.")
    tokens_per_month: int | None = Field(None, ge=0, description="The same, per calendar month.")
    jobs_at_once: int | None = Field(None, ge=0, description="Jobs waiting or running at once (chats, responses, batch lines).")
    batch_lines_per_day: int | None = Field(None, ge=0, description="Batch lines queued per day.")

    def over(self, default: "Quota") -> "Quota":
        """This quota with the default's limit wherever it sets none."""
        return Quota(**{name: getattr(self, name) if getattr(self, name) is not None else getattr(default, name)
                        for name in Quota.model_fields})


class Periods(BaseModel):
    """Usage by period, each {model or "total": {counter: n}}."""

    today: dict[str, dict[str, int]]
    week: dict[str, dict[str, int]]
    month: dict[str, dict[str, int]]


def _merge(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for part in parts:
        for model, counts in part.items():
            into = out.setdefault(model, {})
            for counter, n in counts.items():
                into[counter] = into.get(counter, 0) + n
    return out


class UsageStore:
    def __init__(self, redis: AsyncRedis, clock: UsageClock):
        self._redis, self.clock = redis, clock

    async def now(self) -> datetime:
        return self.clock.at(await self._redis.time())

    async def periods(self, user: str, moment: datetime | None = None) -> Periods:
        moment = moment or await self.now()
        days = [d.isoformat() for d in week_days(moment)]
        pipe = self._redis.pipeline(transaction=False)
        for period in [*days, month_of(moment)]:
            pipe.hgetall(usage_key(user, period))
        *week, month = [totals(raw) for raw in await pipe.execute()]
        return Periods(today=week[-1], week=_merge(week), month=month)

    async def today(self, users: list[str]) -> dict[str, dict[str, int]]:
        """Each user's totals today."""
        day = day_of(await self.now())
        pipe = self._redis.pipeline(transaction=False)
        for user in users:
            pipe.hgetall(usage_key(user, day))
        return {user: totals(raw).get("total", {}) for user, raw in zip(users, await pipe.execute())}

    async def periods_kept(self, user: str) -> list[str]:
        """The keys of the user's usage hashes (a day or a month each)."""
        return [text(k) async for k in self._redis.scan_iter(match=usage_key(user, "*"), count=500)]

    async def forget(self, user: str) -> int:
        """Delete a user's usage and quota (their account is revoked); how many periods it had."""
        keys = await self.periods_kept(user)
        if keys:
            await self._redis.delete(*keys)
        await self._redis.hdel(QUOTAS_KEY, user)
        return len(keys)


class QuotaStore:
    def __init__(self, redis: AsyncRedis):
        self._redis = redis

    async def get(self, user: str = DEFAULT) -> Quota:
        """The quota set for `user` (or the default), without the default filled in."""
        raw = await self._redis.hget(QUOTAS_KEY, user)
        return Quota() if raw is None else Quota.model_validate_json(raw)

    async def effective(self, user: str) -> Quota:
        own, default = await self._redis.hmget(QUOTAS_KEY, [user, DEFAULT])
        mine = Quota() if own is None else Quota.model_validate_json(own)
        return mine.over(Quota() if default is None else Quota.model_validate_json(default))

    async def set(self, actor: User, quota: Quota, user: str = DEFAULT) -> None:
        await self._redis.hset(QUOTAS_KEY, user, quota.model_dump_json())
        log.info("account set_quota", extra={"actor": actor.name, "action": "set_quota", "target": user, **quota.model_dump()})

    async def clear(self, actor: User, user: str = DEFAULT) -> bool:
        cleared = bool(await self._redis.hdel(QUOTAS_KEY, user))
        log.info("account clear_quota", extra={"actor": actor.name, "action": "clear_quota", "target": user})
        return cleared

    async def all(self) -> dict[str, Quota]:
        """Every quota set, by user name (DEFAULT for everyone's)."""
        return {text(name): Quota.model_validate(json.loads(raw)) for name, raw in (await self._redis.hgetall(QUOTAS_KEY)).items()}
