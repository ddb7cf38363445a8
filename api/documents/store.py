"""Documents' extracted text in Redis (`hearth:document:{id}`, hearth.documents): written once,
read by the worker, with the lifetime of what it came from (a file, a job, a response), and
whose it is, so history read back from stored items attaches only its owner's documents.
Documents sent inline (`file_data`) have no file: each owner's are listed here with their size
and end, so they count against the owner's storage bound and go with the owner. One a stored
conversation's question attached is held by that conversation once the turn stands: it has no
end then, and goes with the question (the conversation, the item, or a turn that replaced it).
The worker adds its chunks' vectors, with the same lifetime; they are deleted with the text."""

import time
from collections.abc import Sequence

from redis.asyncio import Redis as AsyncRedis

from hearth.documents import DocumentText, chunk_vectors_key, document_key
from hearth.redis_client import texts

OWNER_KEY = "hearth:document:{document_id}:owner"  # string: the owner's name
UPLOADING_KEY = "hearth:documents:{owner}:uploading"  # integer: bytes of the owner's uploads being read now
INLINE_KEY = "hearth:documents:{owner}:inline"  # hash: inline document id -> "bytes:expires_at[:holder]"; 0: held
# (no end) by the holder; the hash expires with the last end, if none is held

# Lists an inline document (when ARGV[2..4] are given: id, bytes, expires_at), drops those that
# have ended (ARGV[1]: now), keeps the list as long as its last, and answers the bytes of the rest.
_INLINE_LUA = """
local now = tonumber(ARGV[1])
if ARGV[2] then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. ':' .. ARGV[4]) end
local total, last, held = 0, 0, false
local listed = redis.call('HGETALL', KEYS[1])
for i = 1, #listed, 2 do
  local size, ends = string.match(listed[i + 1], '^(%d+):(%d+)')
  ends = tonumber(ends)
  if ends ~= 0 and ends <= now then
    redis.call('HDEL', KEYS[1], listed[i])
  else
    total = total + tonumber(size)
    if ends == 0 then held = true elseif ends > last then last = ends end
  end
end
if held then redis.call('PERSIST', KEYS[1]) elseif last > 0 then redis.call('EXPIREAT', KEYS[1], last) end
return total
"""

# KEYS: the owner's list, then each document's text, owner and vectors keys. ARGV: hold|release,
# the holder, then the documents' ids. hold: each listed one still kept is held by the holder
# (no end, its keys persist). release: each one the holder holds is deleted. Others (uploaded
# files, another holder's) are left alone. _INLINE_LUA then sets the list's own end again.
_HOLDING_LUA = """
local done = 0
for i = 3, #ARGV do
  local entry = redis.call('HGET', KEYS[1], ARGV[i])
  local keys = {KEYS[(i - 3) * 3 + 2], KEYS[(i - 3) * 3 + 3], KEYS[(i - 3) * 3 + 4]}
  if entry and ARGV[1] == 'hold' and redis.call('EXISTS', keys[1]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], string.match(entry, '^(%d+):') .. ':0:' .. ARGV[2])
    for _, key in ipairs(keys) do redis.call('PERSIST', key) end
    done = done + 1
  elseif entry and ARGV[1] == 'release' and string.match(entry, '^%d+:0:(.*)$') == ARGV[2] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('DEL', unpack(keys))
    done = done + 1
  end
end
return done
"""


def _owner_key(document_id: str) -> str:
    return OWNER_KEY.format(document_id=document_id)


def _inline_key(owner: str) -> str:
    return INLINE_KEY.format(owner=owner)


class DocumentStore:
    def __init__(self, redis: AsyncRedis):
        self._redis = redis
        self._inline_script = redis.register_script(_INLINE_LUA)
        self._holding_script = redis.register_script(_HOLDING_LUA)

    async def put(self, owner: str, text: DocumentText, ttl_s: int | None, inline_bytes: int | None = None) -> None:
        """Keeps the text for `ttl_s` (None: until deleted); a document sent inline (its size
        given as `inline_bytes`) is listed as the owner's as long."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(document_key(text.document_id), text.model_dump_json(), ex=ttl_s)
        pipe.set(_owner_key(text.document_id), owner, ex=ttl_s)
        if inline_bytes is not None and ttl_s is not None:
            now = int(time.time())
            await self._inline_script(keys=[_inline_key(owner)], args=[now, text.document_id, inline_bytes, now + ttl_s], client=pipe)
        await pipe.execute()

    async def inline_bytes(self, owner: str) -> int:
        """The bytes of the owner's inline documents still kept."""
        return int(await self._inline_script(keys=[_inline_key(owner)], args=[int(time.time())]))

    async def delete_inline(self, owner: str, *document_ids: str) -> None:
        if document_ids:
            await self.delete(*document_ids)
            await self._redis.hdel(_inline_key(owner), *document_ids)

    async def hold(self, owner: str, holder: str, document_ids: Sequence[str]) -> int:
        """The owner's inline documents among `document_ids` are kept as long as `holder` keeps
        them (see `delete_held`); how many."""
        return await self._holding("hold", owner, holder, document_ids)

    async def delete_held(self, owner: str, holder: str, document_ids: Sequence[str]) -> int:
        """Deletes those of `document_ids` that `holder` holds; how many."""
        return await self._holding("release", owner, holder, document_ids)

    async def _holding(self, action: str, owner: str, holder: str, document_ids: Sequence[str]) -> int:
        if not document_ids:
            return 0
        keys = [key(d) for d in document_ids for key in (document_key, _owner_key, chunk_vectors_key)]
        pipe = self._redis.pipeline(transaction=True)
        await self._holding_script(keys=[_inline_key(owner), *keys], args=[action, holder, *document_ids], client=pipe)
        await self._inline_script(keys=[_inline_key(owner)], args=[int(time.time())], client=pipe)
        done, _ = await pipe.execute()
        return int(done)

    async def inline_documents(self, owner: str) -> list[str]:
        """The owner's inline documents still kept."""
        ids = texts(await self._redis.hkeys(_inline_key(owner)))
        return [d for d, whose in zip(ids, await self.owners(ids), strict=True) if whose == owner]

    async def delete_owner_inline(self, owner: str) -> int:
        """Deletes all of the owner's inline documents; how many were still kept."""
        ids = await self.inline_documents(owner)
        await self.delete(*ids)
        await self._redis.delete(_inline_key(owner))
        return len(ids)

    async def owners(self, document_ids: Sequence[str]) -> list[str | None]:
        """Each document's owner (None: no longer kept), in one round trip."""
        if not document_ids:
            return []
        return [raw.decode() if isinstance(raw, bytes) else raw for raw in await self._redis.mget([_owner_key(d) for d in document_ids])]

    async def reserve(self, owner: str, size: int, ttl_s: int) -> int:
        """Counts `size` bytes as being uploaded by `owner` (for at most `ttl_s`, should the api
        stop meanwhile); the bytes of all their uploads in progress, this one included."""
        key = UPLOADING_KEY.format(owner=owner)
        pipe = self._redis.pipeline(transaction=True)
        pipe.incrby(key, size)
        pipe.expire(key, ttl_s)
        total, _ = await pipe.execute()
        return int(total)

    async def release(self, owner: str, size: int) -> None:
        await self._redis.decrby(UPLOADING_KEY.format(owner=owner), size)

    async def delete(self, *document_ids: str) -> None:
        """Deletes the documents' text, with their owner and their chunks' vectors."""
        if document_ids:
            await self._redis.delete(*(key(d) for d in document_ids for key in (document_key, _owner_key, chunk_vectors_key)))
