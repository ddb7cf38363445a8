"""Text a request may carry: what JSON can spell but Unicode cannot hold is refused."""

from typing import Annotated

from pydantic import AfterValidator


def valid_unicode(text: str) -> str:
    """JSON may escape a lone surrogate ("\\ud800"): no text, and it cannot be encoded for
    Redis or the tokenizer. Refused here, naming the field, rather than failing later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate escape (such as \\ud800), which is not valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]
