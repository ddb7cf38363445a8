"""Documents as their owner uses them: uploading one (bounded, its text read once), deleting
it with its bytes and text, and turning a request's file parts into the DocumentRefs a job
carries. Another person's file answers as absent (404), as a missing one does."""

import base64
import binascii
import logging
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from api.documents.blobs import blob_store
from api.documents.extraction import Extractor
from api.documents.parts import FileInput
from api.documents.store import DocumentStore
from api.errors import HearthError
from api.files.store import FileInfo, FileStore
from api.jobs.service import JobService
from api.settings import ApiSettings
from hearth.contract import EmbeddingPayload, Message
from hearth.documents import DocumentRef, DocumentText

log = logging.getLogger(__name__)

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?;base64,", re.IGNORECASE)
_EXTENSION_OF = {"application/pdf": ".pdf", "text/plain": ".txt", "text/markdown": ".md", "text/html": ".html",
                 "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx"}
MB = 2**20


def file_not_found(file_id: str, param: str = "file_id") -> HearthError:
    return HearthError(404, f"No such File object: {file_id}", "invalid_request_error", "file_not_found", param)


class DocumentService:
    def __init__(self, files: FileStore, texts: DocumentStore, extractor: Extractor, settings: ApiSettings, jobs: JobService | None):
        self._files, self._texts, self._extractor, self._settings = files, texts, extractor, settings
        self._jobs = jobs  # None: a process that only deletes documents (`hearth users revoke`)

    async def _embed(self, owner: str, document_id: str) -> None:
        """With DOCUMENT_EMBEDDING_MODEL, queues the embedding of a new document's chunks, whose
        vectors the worker keeps with its text (hearth.documents). Best effort: it runs after
        the document was kept and the request's own job was queued, and BM25 alone ranks the
        chunks of a document without vectors, so a failure here fails nothing (logged)."""
        model = self._settings.document_embedding_model
        if not model or self._jobs is None:
            return
        try:
            await self._jobs.submit_background(EmbeddingPayload(job_id=secrets.token_hex(16), model=model, inputs=[], user=owner,
                                                                document_id=document_id), owner)
        except RedisError:
            log.warning("document embedding not queued", exc_info=True, extra={"document_id": document_id})

    def _check_size(self, size: int, param: str) -> None:
        limit = self._settings.document_max_file_bytes
        if size > limit:
            raise HearthError(413, f"The document is larger than {limit} bytes, the most Hearth accepts.", param=param)

    @asynccontextmanager
    async def _room(self, owner: str, size: int, param: str) -> AsyncIterator[None]:
        """Holds `size` bytes within the owner's storage bound (their files, inline documents
        and uploads in progress; 413 saying how much is used) while the block reads and keeps a
        document. Counted before it is read, so that documents at once cannot pass the bound together."""
        uploading = await self._texts.reserve(owner, size, int(self._settings.document_extract_wall_s) + 60)
        try:
            kept = sum(f.bytes for f in await self._files.documents(owner)) + await self._texts.inline_bytes(owner)
            bound = self._settings.document_storage_mb_per_user * MB
            if kept + uploading > bound:
                raise HearthError(413, f"Your documents take {(kept + uploading - size) / MB:.1f} MB of your {bound / MB:g} MB "
                                       f"(files sent inline and uploads in progress included); this one ({size / MB:.1f} MB) "
                                       "would pass that bound. Delete files you no longer need.",
                                  code="storage_limit_exceeded", param=param)
            yield
        finally:
            await self._texts.release(owner, size)

    async def upload(self, owner: str, filename: str, purpose: str, data: bytes, retention_s: int | None) -> FileInfo:
        """A new document file: within its owner's storage bound, its text read (400 when it
        cannot be), then its bytes and text kept."""
        self._check_size(len(data), "file")
        async with self._room(owner, len(data), "file"):
            pages = await self._extractor.pages(filename, data)
            info = await self._files.create(owner, filename, purpose, data, retention_s)
        ttl = None if info.expires_at is None else info.expires_at - info.created_at
        await self._texts.put(owner, DocumentText(document_id=info.id, filename=filename, pages=pages), ttl)
        await self._embed(owner, info.id)
        log.info("document stored", extra={"file_id": info.id, "bytes": info.bytes, "pages": len(pages)})
        return info

    async def delete(self, owner: str, file_id: str) -> bool:
        """Deletes the file, and with a document its bytes and text; False when the owner has no such file."""
        if not await self._files.delete(owner, file_id):
            return False
        await self._texts.delete(file_id)
        return True

    async def count_owner(self, owner: str) -> int:
        """How many documents a person keeps: their files' and those they sent inline."""
        return len(await self._files.documents(owner)) + len(await self._texts.inline_documents(owner))

    async def delete_owner(self, owner: str) -> int:
        """Deletes all of a person's files (their documents' bytes and text with them) and the
        documents they sent inline; how many documents."""
        documents = await self._files.delete_owner(owner)
        await self._texts.delete(*documents)
        return len(documents) + await self._texts.delete_owner_inline(owner)

    async def _uploaded(self, owner: str, file_id: str, param: str) -> DocumentRef:
        info = await self._files.get(owner, file_id)
        if info is None:
            raise file_not_found(file_id, param)
        if not info.is_document:
            raise HearthError(400, f"The file {file_id!r} has purpose {info.purpose!r}: a chat reads files uploaded with purpose "
                                   "'user_data'.", param=param)
        return DocumentRef(document_id=info.id, filename=info.filename)

    async def _inline(self, owner: str, part: FileInput, ttl_s: int, param: str) -> DocumentRef:
        assert part.file_data is not None
        match = _DATA_URL.match(part.file_data)
        encoded = part.file_data[match.end():] if match else part.file_data
        self._check_size(len(encoded) * 3 // 4, param)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise HearthError(400, "file_data is not base64 (or a data URL with base64 content).", param=param) from None
        mime = (match.group("mime") or "").lower() if match else ""
        filename = part.filename or f"document{_EXTENSION_OF.get(mime, '')}"
        async with self._room(owner, len(data), param):
            pages = await self._extractor.pages(filename, data, param)
            text = DocumentText(document_id=f"doc-{secrets.token_hex(12)}", filename=filename, pages=pages)
            await self._texts.put(owner, text, ttl_s, inline_bytes=len(data))
        return DocumentRef(document_id=text.document_id, filename=filename)

    @asynccontextmanager
    async def attaching(self, owner: str, parts: Sequence[Sequence[tuple[str, FileInput]]],
                        ttl_s: int) -> AsyncIterator[list[list[DocumentRef]]]:
        """Each message's file parts (with the field that holds each, for errors) as DocumentRefs,
        for the block that queues the job reading them: uploaded files checked as the owner's
        documents, inline ones read and kept for `ttl_s`, and deleted again should the request
        be refused (a later part, the quota, the queue) before its job is queued; embedded
        (DOCUMENT_EMBEDDING_MODEL) once it is."""
        inline: list[str] = []
        try:
            refs: list[list[DocumentRef]] = []
            for message in parts:
                refs.append([])
                for param, part in message:
                    if part.file_id is not None:
                        refs[-1].append(await self._uploaded(owner, part.file_id, f"{param}.file_id"))
                    else:
                        refs[-1].append(await self._inline(owner, part, ttl_s, f"{param}.file_data"))
                        inline.append(refs[-1][-1].document_id)
            yield refs
        except BaseException:
            await self._texts.delete_inline(owner, *inline)
            raise
        for document_id in inline:
            await self._embed(owner, document_id)

    async def hold(self, owner: str, holder: str, documents: Sequence[DocumentRef]) -> None:
        """Those of `documents` the owner sent inline live as long as `holder` (a stored
        conversation) keeps the question that attached them; an uploaded file keeps its own lifetime."""
        await self._texts.hold(owner, holder, [ref.document_id for ref in documents])

    async def delete_held(self, owner: str, holder: str, documents: Sequence[DocumentRef]) -> None:
        """Deletes those of `documents` that `holder` held: what attached them is deleted."""
        await self._texts.delete_held(owner, holder, [ref.document_id for ref in documents])

    async def owned_messages(self, owner: str, messages: Sequence[Message]) -> list[Message]:
        """`messages` read back from stored items (which a client may have written or imported),
        each with those of its documents that are the owner's and still kept."""
        ids = [ref.document_id for m in messages for ref in m.documents]
        mine = {d for d, whose in zip(ids, await self._texts.owners(ids), strict=True) if whose == owner}
        return [m.model_copy(update={"documents": [r for r in m.documents if r.document_id in mine]}) for m in messages]


def file_services(redis: AsyncRedis, settings: ApiSettings, jobs: JobService | None = None) -> tuple[FileStore, DocumentService]:
    """The files store (bytes in Redis or the blob store) and the documents service over it
    (which queues new documents' chunk embeddings through `jobs`)."""
    files = FileStore(redis, settings.file_retention_s, blob_store(settings))
    return files, DocumentService(files, DocumentStore(redis), Extractor(settings), settings, jobs)
