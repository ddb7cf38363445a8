"""Where document bytes live: a local folder for a one-machine install, an S3-compatible
object store (MinIO, AWS S3, …) when `S3_ENDPOINT` is set, so api processes on several
machines share them. Keys are file ids; metadata and text stay in Redis (api.files.store,
api.documents.store)."""

import asyncio
import io
import os
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from api.settings import ApiSettings

_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # a file id: never a path


def _checked(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class LocalBlobs:
    """One file per blob in a folder; written to a temporary name, then renamed, so a reader
    never sees half a file."""

    def __init__(self, folder: Path):
        self._folder = folder

    def _path(self, key: str) -> Path:
        return self._folder / _checked(key)

    def _put(self, key: str, data: bytes) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        part.write_bytes(data)
        part.replace(path)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)


class S3Blobs:
    """One object per blob in a bucket of an S3-compatible store (minio-py: small, Apache-2.0,
    speaks to any S3 API). Its calls block, so they run in threads."""

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str = ""):
        url = urlsplit(endpoint)
        self._client = Minio(url.netloc, access_key=access_key, secret_key=secret_key, secure=url.scheme == "https",
                             region=region or None)
        self._bucket = bucket
        self._ready = False

    def _ensure_bucket(self) -> None:
        if not self._ready:
            if not self._client.bucket_exists(self._bucket):
                self._client.make_bucket(self._bucket)
            self._ready = True

    def _put(self, key: str, data: bytes) -> None:
        self._ensure_bucket()
        self._client.put_object(self._bucket, _checked(key), io.BytesIO(data), len(data))

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    def _get(self, key: str) -> bytes | None:
        self._ensure_bucket()
        try:
            response = self._client.get_object(self._bucket, _checked(key))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    def _delete(self, key: str) -> None:
        self._ensure_bucket()
        self._client.remove_object(self._bucket, _checked(key))  # no error for a missing key: S3's DELETE is idempotent

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)


def blob_store(settings: ApiSettings) -> BlobStore:
    if settings.s3_endpoint:
        return S3Blobs(settings.s3_endpoint, settings.s3_bucket, settings.s3_access_key, settings.s3_secret_key, settings.s3_region)
    return LocalBlobs(Path(settings.blob_dir))
