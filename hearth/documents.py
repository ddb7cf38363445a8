"""A document's text as the api extracts it once and the worker reads it: the contract for
documents in chats (OpenAI file inputs) between them.

The api extracts a file's text when it is uploaded with purpose `user_data` (or sent inline as
`file_data`) and keeps it in Redis as one JSON `DocumentText` under `document_key`; a message
that attaches it carries a `DocumentRef`. The bytes themselves live in the blob store, never
in a job. With `DOCUMENT_EMBEDDING_MODEL`, the api then queues an embedding job naming the
document (`EmbeddingPayload.document_id`), and the worker keeps its chunks' vectors under
`chunk_vectors_key`, with the text's lifetime; whoever deletes the text deletes them with it.
"""

from pydantic import BaseModel

DOCUMENT_KEY = "hearth:document:{document_id}"  # string: DocumentText JSON
# hash: `meta` (ChunkVectors JSON) and `data`, the vectors of the document's first chunks
# (worker.documents.chunks), float32 little-endian, chunk after chunk
CHUNK_VECTORS_KEY = "hearth:document:{document_id}:vectors"


def document_key(document_id: str) -> str:
    return DOCUMENT_KEY.format(document_id=document_id)


def chunk_vectors_key(document_id: str) -> str:
    return CHUNK_VECTORS_KEY.format(document_id=document_id)


class ChunkVectors(BaseModel):
    """What a document's chunk vectors were made with: they rank its chunks only for a worker
    that cuts the same chunks and embeds them and questions the same way."""

    model: str
    chunk_tokens: int
    overlap_tokens: int
    dimensions: int
    chunk_prefix: str = ""  # put before each chunk's text (DOCUMENT_EMBEDDING_CHUNK_PREFIX)


class DocumentPage(BaseModel):
    """A page of a PDF, or a section of a document without pages (numbered from 1 all the
    same), with the heading it falls under when the format says."""

    number: int
    text: str
    heading: str | None = None


class DocumentText(BaseModel):
    document_id: str  # the file id, or an id of its own for inline `file_data`
    filename: str
    pages: list[DocumentPage]


class DocumentRef(BaseModel):
    """A document attached to a message."""

    document_id: str
    filename: str


class Citation(BaseModel):
    """A document an answer was given from, or one part of it (the worker's `done` event
    lists them): `chunk` and `page` name the part; both None, the document was read whole."""

    document_id: str
    filename: str
    page: int | None = None  # the part's page (or section) number
    chunk: int | None = None  # the part's place among the document's chunks, from 0
