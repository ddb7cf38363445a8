"""The embeddings request as OpenAI defines it, its checks, and the response."""

import base64
import sys
from array import array
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.chat.schemas import INT32_MAX, NAME_CHARS, Text
from api.chat.text import valid_unicode
from api.errors import HearthError
from hearth.contract import EmbeddingInput, EmbeddingModel

TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]
NotEmpty = Field(min_length=1)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[Text, Field(max_length=NAME_CHARS)]
    # A text, texts, a token array, or token arrays (OpenAI's four forms), none empty.
    input: (Annotated[str, NotEmpty] | Annotated[list[Annotated[str, NotEmpty]], NotEmpty]
            | Annotated[list[TokenId], NotEmpty] | Annotated[list[Annotated[list[TokenId], NotEmpty]], NotEmpty])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: Annotated[Text, Field(max_length=NAME_CHARS)] | None = None  # checked, then ignored

    @field_validator("input", mode="before")
    @classmethod
    def _one_form(cls, value: Any) -> Any:
        # Named here: as a failed union its error would name one of the union's branches.
        if value in ("", []):
            raise ValueError("must not be empty")
        if isinstance(value, list):
            if len({type(item) for item in value}) > 1:
                raise ValueError("an array of inputs must be all strings, all token ids, or all token arrays")
            empty = next((i for i, item in enumerate(value) if item in ("", [])), None)
            if empty is not None:
                raise ValueError(f"input {empty} is empty: an input is a non-empty string or token array")
        return value

    @field_validator("input")
    @classmethod
    def _valid_text(cls, value: str | list[Any]) -> str | list[Any]:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                valid_unicode(item)
        return value

    def inputs(self) -> list[EmbeddingInput]:
        """Every input, as texts or token arrays."""
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], int):
            return [list(self.input)]
        return list(self.input)


def check_embedding(body: EmbeddingRequest, max_inputs: int, model: EmbeddingModel | None) -> None:
    """The operator's bound and what the model can take (when a live worker said), each
    refusal a 400 naming the field; a text's length in tokens is counted by the worker."""
    inputs = body.inputs()
    if len(inputs) > max_inputs:
        raise HearthError(400, f"input: at most {max_inputs} inputs are allowed in one request, got {len(inputs)}.", param="input")
    if model is None:
        return
    if body.dimensions is not None and body.dimensions != model.dimensions:
        raise HearthError(400, f"dimensions: this model's embeddings have {model.dimensions} dimensions, and it cannot "
                               f"make others; leave dimensions out or set it to {model.dimensions}.", param="dimensions")
    for index, item in enumerate(inputs):
        if isinstance(item, list) and len(item) > model.max_input_tokens:
            raise HearthError(400, f"input[{index}] has {len(item)} tokens; this model embeds at most "
                                   f"{model.max_input_tokens} tokens per input.", code="context_length_exceeded", param=f"input.{index}")
        outside = next((t for t in item if t >= model.vocabulary), None) if isinstance(item, list) and model.vocabulary else None
        if outside is not None:
            raise HearthError(400, f"input[{index}]: token id {outside} is outside the model's vocabulary of "
                                   f"{model.vocabulary} tokens.", param=f"input.{index}")


def render(vectors: bytes, count: int, model: str, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    """OpenAI's `list` of `embedding` objects from a job's vectors (float32, little-endian,
    input after input): base64 of those bytes, or the numbers."""
    if count == 0 or len(vectors) % count:
        raise ValueError(f"{len(vectors)} bytes of vectors for {count} inputs")
    size = len(vectors) // count
    data = []
    for index in range(count):
        raw = vectors[index * size:(index + 1) * size]
        if encoding == "base64":
            embedding: str | list[float] = base64.b64encode(raw).decode()
        else:
            numbers = array("f", raw)
            if sys.byteorder == "big":
                numbers.byteswap()
            embedding = numbers.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
