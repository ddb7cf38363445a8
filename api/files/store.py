"""Files (OpenAI's Files API): batch inputs people upload, the output and error files of
their batches, and documents (`user_data`). The one module that knows the files' Redis keys
and where their bytes are.

A file is a hash of its metadata. A batch file's bytes are a Redis string, both expiring after
the retention time. A document's bytes are in the blob store (api.documents.blobs: disk or S3,
not Redis's memory), kept until the file is deleted or its own `expires_after` ends: a
housekeeping round (`sweep_expired`) deletes those bytes once Redis has let the record expire.
Each owner has an index (sorted by creation) for listing, pruned of expired ids as it is read.
Another user's file answers as absent.
"""

import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis as AsyncRedis

from api.documents.blobs import BlobStore
from hearth.redis_client import members, text_hash

DOCUMENT_PURPOSES = ("user_data", "assistants")  # files whose text a chat may read (api.documents)

FILE_KEY = "hearth:file:{file_id}"  # hash: owner, filename, purpose, bytes, created_at, expires_at
FILE_DATA_KEY = "hearth:file:{file_id}:data"  # string: the content
OWNER_FILES_KEY = "hearth:files:{owner}"  # sorted set: file id -> created_at
EXPIRING_KEY = "hearth:files:expiring"  # sorted set: "{file id}:{owner}" -> expires_at, documents with an end of their own
SWEEP_BATCH = 100  # expired documents a housekeeping round deletes at most


def _file_key(file_id: str) -> str:
    return FILE_KEY.format(file_id=file_id)


def _data_key(file_id: str) -> str:
    return FILE_DATA_KEY.format(file_id=file_id)


def _owner_key(owner: str) -> str:
    return OWNER_FILES_KEY.format(owner=owner)


def _expiring(file_id: str, owner: str) -> str:
    return f"{file_id}:{owner}"  # a file id has no colon


@dataclass(frozen=True)
class FileInfo:
    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None  # None: kept until deleted

    @property
    def is_document(self) -> bool:
        return self.purpose in DOCUMENT_PURPOSES

    def dump(self) -> dict[str, Any]:
        """The OpenAI `file` object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "expires_at": self.expires_at,
                "status": "processed", "status_details": None}


@dataclass(frozen=True)
class Page:
    items: list[Any]
    has_more: bool


class FileStore:
    def __init__(self, redis: AsyncRedis, retention_s: int, blobs: BlobStore):
        self._redis, self._retention, self._blobs = redis, retention_s, blobs

    async def create(self, owner: str, filename: str, purpose: str, data: bytes, retention_s: int | None = None) -> FileInfo:
        """A new file; without `retention_s`, a batch file is kept for the retention time and
        a document until it is deleted."""
        document = purpose in DOCUMENT_PURPOSES
        ttl = retention_s or (None if document else self._retention)
        now = int(time.time())
        info = FileInfo(f"file-{secrets.token_hex(12)}", owner, filename, purpose, len(data), now, None if ttl is None else now + ttl)
        if document:
            await self._blobs.put(info.id, data)  # before the record: a listed file always has its bytes
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(_file_key(info.id), mapping={"owner": owner, "filename": filename, "purpose": purpose,
                                               "bytes": info.bytes, "created_at": now, "expires_at": info.expires_at or 0})
        if ttl is not None:
            pipe.expire(_file_key(info.id), ttl)
        if not document:
            pipe.set(_data_key(info.id), data, ex=ttl)
        elif info.expires_at is not None:
            pipe.zadd(EXPIRING_KEY, {_expiring(info.id, owner): info.expires_at})
        pipe.zadd(_owner_key(owner), {info.id: now})
        await pipe.execute()
        return info

    async def get(self, owner: str, file_id: str) -> FileInfo | None:
        raw = await self._redis.hgetall(_file_key(file_id))
        if not raw:
            return None
        f = text_hash(raw)
        if f["owner"] != owner:
            return None
        return FileInfo(file_id, f["owner"], f["filename"], f["purpose"], int(f["bytes"]), int(f["created_at"]),
                        int(f["expires_at"]) or None)

    async def content(self, owner: str, file_id: str) -> bytes | None:
        info = await self.get(owner, file_id)
        if info is None:
            return None
        if info.is_document:
            return await self._blobs.get(file_id)
        data: bytes | None = await self._redis.get(_data_key(file_id))  # type: ignore[assignment]  # redis-py: bytes | str; this client answers bytes
        return data

    async def page(self, owner: str, after: str | None, limit: int, order: str, purpose: str | None) -> Page:
        """The owner's files by creation time (`order` asc or desc), after the id `after`."""
        ids = members(await self._redis.zrange(_owner_key(owner), 0, -1, desc=order == "desc"))
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        out: list[FileInfo] = []
        gone: list[str] = []
        for file_id in ids:
            info = await self.get(owner, file_id)
            if info is None:
                gone.append(file_id)
            elif purpose is None or info.purpose == purpose:
                out.append(info)
                if len(out) > limit:
                    break
        if gone:
            await self._forget(owner, gone)
        return Page(out[:limit], len(out) > limit)

    async def _forget(self, owner: str, file_ids: list[str]) -> None:
        """Drops deleted or expired files from the owner's index and the expiring documents, and
        their bytes from the blob store (an id there that was never a document's is no blob:
        deleting it does nothing)."""
        for file_id in file_ids:
            await self._blobs.delete(file_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(_owner_key(owner), *file_ids)
        pipe.zrem(EXPIRING_KEY, *(_expiring(file_id, owner) for file_id in file_ids))
        await pipe.execute()

    async def sweep_expired(self) -> None:
        """A housekeeping round: the documents whose own end has come, once Redis has let their
        record expire (an api clock ahead of Redis's leaves them to a later round), lose their
        bytes and their place in their owner's list."""
        due = members(await self._redis.zrangebyscore(EXPIRING_KEY, "-inf", int(time.time()), start=0, num=SWEEP_BATCH))
        for entry in due:
            file_id, owner = entry.split(":", 1)
            if not await self._redis.exists(_file_key(file_id)):
                await self._forget(owner, [file_id])

    async def documents(self, owner: str) -> list[FileInfo]:
        """The owner's documents (files whose bytes are in the blob store)."""
        page = await self.page(owner, None, 2**31, "asc", None)
        return [f for f in page.items if f.is_document]

    async def delete(self, owner: str, file_id: str) -> bool:
        info = await self.get(owner, file_id)
        if info is None:
            return False
        await self._redis.delete(_file_key(file_id), _data_key(file_id))
        await self._forget(owner, [file_id])
        return True

    async def delete_owner(self, owner: str) -> list[str]:
        """Deletes all of the owner's files; the ids of the documents among them."""
        ids = members(await self._redis.zrange(_owner_key(owner), 0, -1))
        documents = [file_id for file_id in ids if (info := await self.get(owner, file_id)) is not None and info.is_document]
        if ids:
            await self._redis.delete(*(key for file_id in ids for key in (_file_key(file_id), _data_key(file_id))))
            await self._forget(owner, ids)  # expired ones too
        return documents
