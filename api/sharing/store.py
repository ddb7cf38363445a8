"""Who may read whose conversation: the one owner of the sharing keys.

A share is kept twice, each side's to read in one call: the conversation's grantees and, per
grantee, what is shared with them. "Everyone" is the grantee `*` (no user name has one).
Nothing here reads a conversation: the conversation store does, for its owner."""

from redis.asyncio import Redis as AsyncRedis

from hearth.redis_client import text

GRANTEES_KEY = "hearth:shares:{owner}:{conv_id}"  # set: user names it is shared with, or "*"
SHARED_WITH_KEY = "hearth:shared_with:{user}"  # set: "<owner>/<conv_id>" shared with the user ("*": everyone)
EVERYONE = "*"


def _ref(owner: str, conv_id: str) -> str:
    return f"{owner}/{conv_id}"


class ShareStore:
    def __init__(self, redis: AsyncRedis):
        self._redis = redis

    async def share(self, owner: str, conv_id: str, grantee: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(GRANTEES_KEY.format(owner=owner, conv_id=conv_id), grantee)
            pipe.sadd(SHARED_WITH_KEY.format(user=grantee), _ref(owner, conv_id))
            await pipe.execute()

    async def unshare(self, owner: str, conv_id: str, grantee: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(GRANTEES_KEY.format(owner=owner, conv_id=conv_id), grantee)
            pipe.srem(SHARED_WITH_KEY.format(user=grantee), _ref(owner, conv_id))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def grantees(self, owner: str, conv_id: str) -> list[str]:
        return sorted(text(g) for g in await self._redis.smembers(GRANTEES_KEY.format(owner=owner, conv_id=conv_id)))

    async def may_read(self, user: str, owner: str, conv_id: str) -> bool:
        key = GRANTEES_KEY.format(owner=owner, conv_id=conv_id)
        return user != owner and any(await self._redis.smismember(key, [user, EVERYONE]))

    async def shared_with(self, user: str) -> list[tuple[str, str]]:
        """(owner, conversation id) of what is shared with `user`, by name or with everyone; not their own."""
        refs = await self._redis.sunion([SHARED_WITH_KEY.format(user=user), SHARED_WITH_KEY.format(user=EVERYONE)])
        found = sorted(tuple(text(r).split("/", 1)) for r in refs)
        return [(owner, conv_id) for owner, conv_id in found if owner != user]

    async def forget(self, owner: str, conv_id: str) -> None:
        """The conversation is gone: its shares go with it."""
        key = GRANTEES_KEY.format(owner=owner, conv_id=conv_id)
        grantees = [text(g) for g in await self._redis.smembers(key)]
        async with self._redis.pipeline(transaction=True) as pipe:
            for grantee in grantees:
                pipe.srem(SHARED_WITH_KEY.format(user=grantee), _ref(owner, conv_id))
            pipe.delete(key)
            await pipe.execute()

    async def forget_user(self, name: str) -> int:
        """A person is revoked: what was shared with them and what they shared go; how many shares."""
        mine = [text(k).rsplit(":", 1)[1] async for k in self._redis.scan_iter(match=GRANTEES_KEY.format(owner=name, conv_id="*"))]
        for conv_id in mine:
            await self.forget(name, conv_id)
        given = [text(r).split("/", 1) for r in await self._redis.smembers(SHARED_WITH_KEY.format(user=name))]
        async with self._redis.pipeline(transaction=True) as pipe:
            for owner, conv_id in given:
                pipe.srem(GRANTEES_KEY.format(owner=owner, conv_id=conv_id), name)
            pipe.delete(SHARED_WITH_KEY.format(user=name))
            await pipe.execute()
        return len(mine) + len(given)
