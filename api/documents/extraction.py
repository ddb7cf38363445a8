"""Reading a document's text off the api's event loop: each document in its own process
(api.documents.reader), bounded in CPU time, memory and wall-clock time, a few at a time, so
a hostile file (a decompression bomb, a million pages, a reference loop) costs at most its
bounds and never stalls anyone else's requests."""

import asyncio
import json
import logging
import sys
from pathlib import Path

from api.errors import HearthError
from api.settings import ApiSettings
from hearth.documents import DocumentPage

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]  # where `python -m api.documents.reader` imports from


def _refused(message: str, param: str) -> HearthError:
    return HearthError(400, message, code="invalid_file", param=param)


class Extractor:
    def __init__(self, settings: ApiSettings):
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.document_extractions)

    async def pages(self, filename: str, data: bytes, param: str = "file") -> list[DocumentPage]:
        """The document's pages, or 400 saying why it cannot be read (its type, a bound, no text)."""
        s = self._settings
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "api.documents.reader", str(s.document_extract_cpu_s), str(s.document_extract_memory_mb),
                str(s.document_max_pages), str(s.document_max_chars), filename,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=_ROOT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(data), s.document_extract_wall_s)
            except TimeoutError:
                raise _refused(f"Reading the document took longer than {s.document_extract_wall_s:g} s, the most Hearth gives it.", param) from None
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        try:
            result = json.loads(out)
        except ValueError:
            # Killed at its CPU bound (SIGXCPU/SIGKILL) or by the memory bound outside Python's reach.
            log.info("document reader ended with %s", proc.returncode, extra={"returncode": proc.returncode})
            raise _refused(f"Reading the document needed more than its bounds ({s.document_extract_cpu_s} CPU seconds, "
                           f"{s.document_extract_memory_mb} MB of memory).", param) from None
        if "error" in result:
            raise _refused(str(result["error"]), param)
        return [DocumentPage.model_validate(p) for p in result["pages"]]
