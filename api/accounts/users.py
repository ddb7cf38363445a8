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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis as AsyncRedis

from hearth.redis_client import text

USERS_KEY = "hearth:users"  # hash: name -> JSON {role, created, password}
API_KEYS_KEY = "hearth:api_keys"  # hash: sha256(key) -> name
SESSION_KEY = "hearth:session:{digest}"  # string: name, expires
KEY_PREFIX = "hk-"
BOOTSTRAP_ADMIN = "admin"

# The user behind a token (an API key's or a session's digest) and its record, in the one
# round trip every request pays. KEYS: api keys, the session, users; ARGV: the digest.
_AUTHENTICATE_LUA = """
local name = redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('GET', KEYS[2])
if not name then return false end
return {name, redis.call('HGET', KEYS[3], name)}
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
    pass


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
    def __init__(self, redis: AsyncRedis, on_revoke: Sequence[Callable[[str], Awaitable[object]]] = (), session_ttl_s: int = 7 * 86400):
        """`on_revoke`: what else to delete with a user (their conversations), given its name;
        `session_ttl_s`: how long a sign-in lasts (`SESSION_TTL_S`)."""
        self._redis, self._session_ttl_s = redis, session_ttl_s
        self._on_revoke = on_revoke

    async def _record(self, name: str) -> dict[str, str] | None:
        raw = await self._redis.hget(USERS_KEY, name)
        return None if raw is None else json.loads(raw)

    async def add(self, name: str, admin: bool = False) -> str:
        """Create a user and return its first API key (shown once, never stored)."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise AuthError("a user name is letters, digits, '-', '_' or '.'")
        record = {"role": Role.ADMIN if admin else Role.USER, "created": int(time.time()), "password": ""}
        if not await self._redis.hsetnx(USERS_KEY, name, json.dumps(record)):
            raise AuthError(f"user {name!r} already exists")
        return await self.new_key(name)

    async def new_key(self, name: str) -> str:
        if await self._record(name) is None:
            raise AuthError(f"no user {name!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        await self._redis.hset(API_KEYS_KEY, _digest(key), name)
        return key

    async def set_password(self, name: str, password: str) -> None:
        record = await self._record(name)
        if record is None:
            raise AuthError(f"no user {name!r}")
        if len(password) < 8:
            raise AuthError("a password has at least 8 characters")
        record["password"] = _hash_password(password)
        await self._redis.hset(USERS_KEY, name, json.dumps(record))

    async def list(self) -> list[tuple[str, Role, int]]:
        """(name, role, number of API keys) for every user."""
        users = await self._redis.hgetall(USERS_KEY)
        owners = list((await self._redis.hgetall(API_KEYS_KEY)).values())
        return sorted(
            (text(name), Role(json.loads(raw)["role"]), owners.count(name)) for name, raw in users.items()
        )

    async def revoke(self, name: str) -> int:
        """Delete a user with all its keys and data; its open ui sessions stop working too."""
        if not await self._redis.hdel(USERS_KEY, name):
            raise AuthError(f"no user {name!r}")
        keys = [d for d, owner in (await self._redis.hgetall(API_KEYS_KEY)).items() if text(owner) == name]
        if keys:
            await self._redis.hdel(API_KEYS_KEY, *keys)
        for delete_data in self._on_revoke:
            await delete_data(name)
        return len(keys)

    async def has_users(self) -> bool:
        return bool(await self._redis.hlen(USERS_KEY))

    async def authenticate(self, token: str) -> User | None:
        """The user behind an API key or a session token."""
        digest = _digest(token)
        found = await self._redis.eval(_AUTHENTICATE_LUA, 3, API_KEYS_KEY, SESSION_KEY.format(digest=digest), USERS_KEY, digest)
        if not found or found[1] is None:
            return None
        return User(found[0].decode(), Role(json.loads(found[1])["role"]))

    async def logout(self, token: str) -> bool:
        """End the session `token` opened; False if it is no session (an API key, say)."""
        return bool(await self._redis.delete(SESSION_KEY.format(digest=_digest(token))))

    async def login(self, name: str, secret: str) -> str:
        """A session token for the ui, given the user's password or one of its API keys."""
        record = await self._record(name)
        user = await self.authenticate(secret) if secret.startswith(KEY_PREFIX) else None
        by_key = user is not None and user.name == name
        stored = (record or {}).get("password") or ""
        # scrypt runs whether or not the name exists or has a password, so the time taken
        # tells no one which names do; in a thread, so the event loop serves others meanwhile.
        matches = await asyncio.to_thread(_password_matches, secret, stored or _NO_PASSWORD)
        by_password = bool(stored) and matches
        if record is None or not (by_key or by_password):
            raise AuthError("Unknown user or wrong password.")
        token = secrets.token_urlsafe(32)
        await self._redis.set(SESSION_KEY.format(digest=_digest(token)), name, ex=self._session_ttl_s)
        return token
