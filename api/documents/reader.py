"""The process that reads one document's text: `python -m api.documents.reader CPU_S MEMORY_MB
MAX_PAGES MAX_CHARS FILENAME`, the bytes on stdin, `{"pages": [...]}` or `{"error": "..."}` on
stdout. It bounds itself (CPU time, address space) before it reads anything; the api bounds its
wall-clock time (api.documents.extraction)."""

import json
import resource
import sys

from api.documents.formats import Unreadable, extract


def main() -> None:
    cpu_s, memory_mb, max_pages, max_chars = (int(a) for a in sys.argv[1:5])
    filename = sys.argv[5]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU, then SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
    data = sys.stdin.buffer.read()
    try:
        pages = extract(filename, data, max_pages, max_chars)
        out: dict[str, object] = {"pages": [p.model_dump() for p in pages]}
    except Unreadable as exc:
        out = {"error": str(exc)}
    except MemoryError:
        out = {"error": f"Reading the document needs more than {memory_mb} MB of memory, the most Hearth gives it."}
    except Exception as exc:  # a library's own failure on a damaged file: unreadable, not a bound it crossed
        out = {"error": f"The document could not be read ({type(exc).__name__})."}
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
