"""Documents' extracted text in Redis (`hearth:document:{id}`, hearth.documents): written once,
read by the worker, with the lifetime of what it came from (a file, a job, a response), and
whose it is, so history read back from stored items attaches only its owner's documents. The
worker adds its chunks' vectors, with the same lifetime; they are deleted with the text."""

from collections.abc import Sequence

from redis.asyncio import Redis as AsyncRedis

from hearth.documents import DocumentText, chunk_vectors_key, document_key

OWNER_KEY = "hearth:document:{document_id}:owner"  # string: the owner's name
UPLOADING_KEY = "hearth:documents:{owner}:uploading"  # integer: bytes of the owner's uploads being read now


def _owner_key(document_id: str) -> str:
    return OWNER_KEY.format(document_id=document_id)


class DocumentStore:
    def __init__(self, redis: AsyncRedis):
        self._redis = redis

    async def put(self, owner: str, text: DocumentText, ttl_s: int | None) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(document_key(text.document_id), text.model_dump_json(), ex=ttl_s)
        pipe.set(_owner_key(text.document_id), owner, ex=ttl_s)
        await pipe.execute()

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
