"""Failed ui sign-ins, counted in Redis per user name and per client address. After
`LOGIN_MAX_FAILURES` within `LOGIN_LOCKOUT_S`, further attempts get 429 with Retry-After until
the window ends, and their password is not even checked: guessing costs the guesser time,
not Hearth CPU (scrypt).

A user's own successful sign-in clears their name's count; an address's count only expires,
so one account of one's own cannot reset it while guessing at others."""

from redis.asyncio import Redis as AsyncRedis

FAILURES_KEY = "hearth:signin:failures:{kind}:{who}"  # string: failures, expires with the window


def _keys(name: str, address: str) -> tuple[str, str]:
    return FAILURES_KEY.format(kind="user", who=name), FAILURES_KEY.format(kind="addr", who=address)


class SignInThrottle:
    def __init__(self, redis: AsyncRedis, max_failures: int, window_s: int):
        self._redis, self._max, self._window = redis, max_failures, window_s

    async def retry_after(self, name: str, address: str) -> int | None:
        """Seconds until `name` may try again from `address`; None if it may now."""
        pipe = self._redis.pipeline(transaction=False)
        for key in _keys(name, address):
            pipe.get(key)
            pipe.ttl(key)
        found = await pipe.execute()
        waits = [max(int(ttl), 1) for count, ttl in zip(found[::2], found[1::2]) if count and int(count) >= self._max]
        return max(waits) if waits else None

    async def failed(self, name: str, address: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for key in _keys(name, address):
            pipe.set(key, 0, ex=self._window, nx=True)  # the window starts at the first failure
            pipe.incr(key)
        await pipe.execute()

    async def succeeded(self, name: str) -> None:
        await self._redis.delete(_keys(name, "")[0])
