"""Users, API keys and ui sessions, stored in Redis; only hashes of secrets are kept.

API keys are long random tokens, so a plain SHA-256 is the right hash (as for GitHub tokens):
it is looked up on every request. Passwords are short and guessable, so they get scrypt.

Timing: a key or session token is found by its digest in a Redis hash, never compared with a
stored secret. How long a lookup takes can depend on the digest, but a caller cannot choose a
digest's bytes (that would take a SHA-256 preimage), so it learns nothing about a stored key;
a constant-time comparison has nothing to protect there. Password hashes are compared with
`hmac.compare_digest`, and sign-in hashes the password even for an unknown user.
"""

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import WatchError

from hearth.redis_client import text

USERS_KEY = "hearth:users"  # hash: name -> JSON {role, created, password}
API_KEYS_KEY = "hearth:api_keys"  # hash: sha256(key) -> name
KEY_INFO_KEY = "hearth:api_key_info"  # hash: sha256(key) -> KeyInfo JSON (keys made before it have none)
KEY_USED_KEY = "hearth:api_key_used"  # hash: sha256(key) -> unix time it was last used (to the minute)
LAST_SEEN_KEY = "hearth:last_seen"  # hash: name -> unix time of their last request (to the minute)
SESSION_KEY = "hearth:session:{digest}"  # string: name, expires
USER_SESSIONS_KEY = "hearth:sessions:{name}"  # set: digests of the user's sessions (some maybe expired)
KEY_PREFIX = "hk-"
SEEN_EVERY_S = 60  # last-used and last-seen times are written at most this often
BOOTSTRAP_ADMIN = "admin"
MIN_PASSWORD = 8

# The user behind a token (an API key's or a session's digest) and its record, in the one
# round trip every request pays; notes the key's last use and the user's last request, at most
# once a minute each. KEYS: api keys, the session, users, keys' last use, last seen; ARGV: the
# digest, SEEN_EVERY_S.
_AUTHENTICATE_LUA = """
local by_key = redis.call('HGET', KEYS[1], ARGV[1])
local name = by_key or redis.call('GET', KEYS[2])
if not name then return false end
local record = redis.call('HGET', KEYS[3], name)
if record then
  local now = tonumber(redis.call('TIME')[1])
  local function note(key, field)
    if now - tonumber(redis.call('HGET', key, field) or '0') >= tonumber(ARGV[2]) then redis.call('HSET', key, field, now) end
  end
  if by_key then note(KEYS[4], ARGV[1]) end
  note(KEYS[5], name)
end
return {name, record}
"""


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


LOCAL_USER = User("local", Role.ADMIN)  # everyone, when AUTH=off


class AuthError(Exception):
    """A refused account change; `status` is the HTTP status the api answers it with."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.code = status, code


class NoSuchUser(AuthError):
    def __init__(self, name: str):
        super().__init__(f"no user {name!r}", 404, "user_not_found")


class LastAdmin(AuthError):
    def __init__(self, name: str):
        super().__init__(f"{name} is the last admin: nobody could manage Hearth from the browser without one.", 409, "last_admin")


Record = dict[str, object]


@dataclass(frozen=True)
class KeyInfo:
    """What is shown of an API key after its creation: never the key itself."""

    id: str  # the start of its digest: names it, reveals nothing
    owner: str
    name: str = ""
    created: int | None = None  # unix seconds; None for keys made before names were kept
    last_used: int | None = None  # to the minute


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: Role
    keys: int
    created: int | None
    last_seen: int | None
    has_password: bool


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${derived.hex()}"


_NO_PASSWORD = f"scrypt${'0' * 32}$"  # matches no password, at the cost of checking one


def _password_matches(password: str, stored: str) -> bool:
    _, salt, _ = stored.split("$")
    return hmac.compare_digest(_hash_password(password, bytes.fromhex(salt)), stored)


class UserStore:
    """The one owner of the account keys above."""

    def __init__(self, redis: AsyncRedis, session_ttl_s: int = 7 * 86400):
        """`session_ttl_s`: how long a sign-in lasts (`SESSION_TTL_S`)."""
        self._redis, self._session_ttl_s = redis, session_ttl_s

    async def _record(self, name: str) -> dict[str, object] | None:
        raw = await self._redis.hget(USERS_KEY, name)
        return None if raw is None else json.loads(raw)

    async def _existing(self, name: str) -> dict[str, object]:
        record = await self._record(name)
        if record is None:
            raise NoSuchUser(name)
        return record

    async def exists(self, name: str) -> bool:
        return bool(await self._redis.hexists(USERS_KEY, name))

    async def add(self, name: str, admin: bool = False) -> str:
        """Create a user and return its first API key (shown once, never stored)."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise AuthError("a user name is 1 to 64 letters, digits, '-', '_' or '.'")
        record = {"role": Role.ADMIN if admin else Role.USER, "created": int(time.time()), "password": ""}
        if not await self._redis.hsetnx(USERS_KEY, name, json.dumps(record)):
            raise AuthError(f"user {name!r} already exists", 409, "user_exists")
        key, _ = await self.new_key(name, "first key")
        return key

    async def new_key(self, name: str, label: str = "") -> tuple[str, KeyInfo]:
        """A new API key for `name`, and what will be shown of it later."""
        await self._existing(name)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(key)
        created = time.time()  # to the microsecond: keys made in one second still list in order
        info = KeyInfo(digest[:16], name, label, int(created))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(API_KEYS_KEY, digest, name)
            pipe.hset(KEY_INFO_KEY, digest, json.dumps({"name": label, "created": created}))
            await pipe.execute()
        return key, info

    async def _digests(self, name: str) -> list[str]:
        return [text(d) for d, owner in (await self._redis.hgetall(API_KEYS_KEY)).items() if text(owner) == name]

    async def keys(self, name: str) -> list[KeyInfo]:
        """The user's API keys, oldest first."""
        digests = await self._digests(name)
        if not digests:
            return []
        infos = await self._redis.hmget(KEY_INFO_KEY, digests)
        used = await self._redis.hmget(KEY_USED_KEY, digests)
        found = []
        for digest, raw, last in zip(digests, infos, used):
            meta = json.loads(raw) if raw else {}
            created = meta.get("created")
            found.append((created or 0.0, KeyInfo(digest[:16], name, meta.get("name", ""), None if created is None else int(created),
                                                   int(last) if last else None)))
        return [info for _, info in sorted(found, key=lambda f: (f[0], f[1].id))]

    async def revoke_key(self, name: str, key_id: str) -> bool:
        """Delete one of `name`'s keys by its id; False if they have none such."""
        digest = next((d for d in await self._digests(name) if d[:16] == key_id), None)
        if digest is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (API_KEYS_KEY, KEY_INFO_KEY, KEY_USED_KEY):
                pipe.hdel(key, digest)
            await pipe.execute()
        return True

    async def _change(self, name: str, change: Callable[[Record], Record | None]) -> None:
        """Replace `name`'s record by `change(record)`, or delete it when that is None, in one
        transaction over everyone's records (WATCH, retried when another change came between):
        two changes at once cannot both take away the last admin, nor undo each other."""
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(USERS_KEY)
                    everyone = {text(n): json.loads(raw) for n, raw in (await pipe.hgetall(USERS_KEY)).items()}
                    if name not in everyone:
                        raise NoSuchUser(name)
                    record = change(dict(everyone[name]))
                    admins = [n for n, r in everyone.items() if r["role"] == Role.ADMIN]
                    if admins == [name] and (record is None or record["role"] != Role.ADMIN):
                        raise LastAdmin(name)
                    pipe.multi()
                    if record is None:
                        pipe.hdel(USERS_KEY, name)
                    else:
                        pipe.hset(USERS_KEY, name, json.dumps(record))
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def set_password(self, name: str, password: str) -> None:
        await self._existing(name)
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"a password has at least {MIN_PASSWORD} characters", code="password_too_short")
        hashed = await asyncio.to_thread(_hash_password, password)
        await self._change(name, lambda record: {**record, "password": hashed})

    async def password_matches(self, name: str, password: str) -> bool:
        """Whether `password` is the user's; True when they have none to match."""
        stored = str((await self._existing(name)).get("password") or "")
        return not stored or await asyncio.to_thread(_password_matches, password, stored)

    async def set_role(self, name: str, role: Role) -> None:
        """Refused (LastAdmin) when it would leave nobody an admin."""
        await self._change(name, lambda record: {**record, "role": role.value})

    async def list(self) -> list[UserInfo]:
        """Every user, by name."""
        users = await self._redis.hgetall(USERS_KEY)
        owners = [text(o) for o in (await self._redis.hgetall(API_KEYS_KEY)).values()]
        seen = {text(k): int(v) for k, v in (await self._redis.hgetall(LAST_SEEN_KEY)).items()}
        found = []
        for raw_name, raw in users.items():
            name, record = text(raw_name), json.loads(raw)
            found.append(UserInfo(name, Role(record["role"]), owners.count(name), record.get("created"), seen.get(name),
                                  bool(record.get("password"))))
        return sorted(found, key=lambda u: u.name)

    async def sessions(self, name: str) -> int:
        """How many ui sessions of `name` are open."""
        digests = [text(d) for d in await self._redis.smembers(USER_SESSIONS_KEY.format(name=name))]
        if not digests:
            return 0
        return int(await self._redis.exists(*(SESSION_KEY.format(digest=d) for d in digests)))

    async def index_sessions(self) -> int:
        """Put every open session into its user's index, where sessions made before the index
        existed are missing, so that signing out everywhere and revoking end them too. Run at
        each start of the api: one SCAN of the keyspace, and a no-op once they are all in.
        Returns how many it added."""
        added = 0
        async for key in self._redis.scan_iter(match=SESSION_KEY.format(digest="*"), count=1000):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                name, ttl_ms = await pipe.execute()
            if name is None or ttl_ms <= 0:
                continue  # ended meanwhile (every session has an expiry)
            index = USER_SESSIONS_KEY.format(name=text(name))
            added += await self._redis.sadd(index, text(key).rsplit(":", 1)[1])
            if await self._redis.pttl(index) < ttl_ms:  # the index outlives its sessions (a sign-in sets it to the full TTL)
                await self._redis.pexpire(index, ttl_ms)
        return added

    async def end_sessions(self, name: str) -> int:
        """Sign `name` out of every ui session; how many were open."""
        index = USER_SESSIONS_KEY.format(name=name)
        digests = [text(d) for d in await self._redis.smembers(index)]
        ended = int(await self._redis.delete(*(SESSION_KEY.format(digest=d) for d in digests))) if digests else 0
        await self._redis.delete(index)
        return ended

    async def delete(self, name: str) -> int:
        """Delete a user with all its keys and sessions; how many keys it had. Refused
        (LastAdmin), deleting nothing, when they are the last admin."""
        await self._change(name, lambda record: None)
        digests = await self._digests(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (API_KEYS_KEY, KEY_INFO_KEY, KEY_USED_KEY):
                if digests:
                    pipe.hdel(key, *digests)
            pipe.hdel(LAST_SEEN_KEY, name)
            await pipe.execute()
        await self.end_sessions(name)
        return len(digests)

    async def has_users(self) -> bool:
        return bool(await self._redis.hlen(USERS_KEY))

    async def authenticate(self, token: str) -> User | None:
        """The user behind an API key or a session token."""
        digest = _digest(token)
        found = await self._redis.eval(_AUTHENTICATE_LUA, 5, API_KEYS_KEY, SESSION_KEY.format(digest=digest), USERS_KEY,
                                       KEY_USED_KEY, LAST_SEEN_KEY, digest, SEEN_EVERY_S)
        if not found or len(found) < 2 or found[1] is None:
            return None
        return User(found[0].decode(), Role(json.loads(found[1])["role"]))

    async def logout(self, token: str) -> bool:
        """End the session `token` opened; False if it is no session (an API key, say)."""
        key = SESSION_KEY.format(digest=_digest(token))
        name = await self._redis.get(key)
        if name is not None:
            await self._redis.srem(USER_SESSIONS_KEY.format(name=text(name)), _digest(token))
        return bool(await self._redis.delete(key))

    async def login(self, name: str, secret: str) -> str:
        """A session token for the ui, given the user's password or one of its API keys."""
        record = await self._record(name)
        user = await self.authenticate(secret) if secret.startswith(KEY_PREFIX) else None
        by_key = user is not None and user.name == name
        stored = str((record or {}).get("password") or "")
        # scrypt runs whether or not the name exists or has a password, so the time taken
        # tells no one which names do; in a thread, so the event loop serves others meanwhile.
        matches = await asyncio.to_thread(_password_matches, secret, stored or _NO_PASSWORD)
        by_password = bool(stored) and matches
        if record is None or not (by_key or by_password):
            raise AuthError("Unknown user or wrong password.", 401, "invalid_credentials")
        token = secrets.token_urlsafe(32)
        digest = _digest(token)
        index = USER_SESSIONS_KEY.format(name=name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(SESSION_KEY.format(digest=digest), name, ex=self._session_ttl_s)
            pipe.sadd(index, digest)
            pipe.expire(index, self._session_ttl_s)
            await pipe.execute()
        return token
