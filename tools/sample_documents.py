"""Documents the tests and benchmarks build themselves: PDFs written by hand (text pages, a scan-like one
with no text layer, hostile ones), DOCX, and the long document with one fact on one page that
retrieval must find."""

import io
import zipfile
import zlib

NEEDLE_PAGE = 137
NEEDLE = "The spare key to the blue shed is hidden under the third flowerpot."


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of `objects` (object n is objects[n-1]; 1 is the catalog), with its xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def _stream(data: bytes, compress: bool = False) -> bytes:
    if compress:
        data = zlib.compress(data, 9)
        return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def _text_stream(text: str) -> bytes:
    lines = [b"(%s) Tj T*" % _escape(line).encode("latin-1", "replace") for line in text.splitlines() or [""]]
    return b"BT /F1 11 Tf 14 TL 72 760 Td " + b" ".join(lines) + b" ET"


def pdf_with_pages(pages: list[str]) -> bytes:
    """A PDF whose page n (from 1) shows pages[n-1], in Helvetica (pypdf reads it back)."""
    return pdf_of_streams([_text_stream(text) for text in pages])


def pdf_of_streams(contents: list[bytes], compress: bool = False) -> bytes:
    count = len(contents)
    first_page = 4
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, content in enumerate(contents):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (first_page + 2 * i + 1))
        objects.append(_stream(content, compress))
    return _pdf(objects)


def long_pdf(pages: int = 200, needle_page: int = NEEDLE_PAGE, needle: str = NEEDLE) -> bytes:
    """A long, dull report with one useful fact, on `needle_page`."""
    texts = [f"Quarterly maintenance log, page {n}.\nThe gutters were inspected and found clear.\n"
             f"Heating oil level recorded as {40 + n % 50} percent.\nNo further action was needed this week."
             for n in range(1, pages + 1)]
    texts[needle_page - 1] += "\n" + needle
    return pdf_with_pages(texts)


def scan_pdf(pages: int = 2) -> bytes:
    """A PDF like a scan: pages that draw (here, grey boxes) but carry no text layer."""
    return pdf_of_streams([b"0.5 g 72 72 468 648 re f" for _ in range(pages)])


def bomb_pdf(decompressed_mb: int = 300) -> bytes:
    """A page whose content stream inflates from a few hundred kB to `decompressed_mb` MB."""
    return pdf_of_streams([b" " * (decompressed_mb * 2**20)], compress=True)


def slow_pdf(operators: int = 3_000_000) -> bytes:
    """A small file whose one page holds millions of text operators: minutes of work to read."""
    return pdf_of_streams([b"BT /F1 1 Tf " + b"(ab) Tj 1 0 Td " * operators + b"ET"], compress=True)


def many_pages_pdf(count: int) -> bytes:
    """A short file that claims `count` pages (the same page object listed again and again)."""
    kids = b" ".join([b"3 0 R"] * count)
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        _stream(b""),
    ])


def looping_pdf() -> bytes:
    """A page tree that contains itself."""
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
        b"<< /Type /Pages /Kids [2 0 R] /Parent 2 0 R /Count 1 >>",
    ])


def docx(paragraphs: list[tuple[str | None, str]]) -> bytes:
    """A minimal DOCX: (style, text) paragraphs, style e.g. "Heading1" or None."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(
        "<w:p>" + (f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else "") + f"<w:r><w:t>{text}</w:t></w:r></w:p>"
        for style, text in paragraphs
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
                   'wordprocessingml.document.main+xml"/></Types>')
        z.writestr("word/document.xml", f'<?xml version="1.0"?><w:document xmlns:w="{w}"><w:body>{body}</w:body></w:document>')
    return out.getvalue()
