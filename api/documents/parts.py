"""A file in a chat request, as OpenAI's two APIs send it: chat completions' `file` content
part (`{"type": "file", "file": {...}}`) and Responses' `input_file` part, both naming an
uploaded file (`file_id`) or carrying its bytes (`file_data`, base64 or a data URL)."""

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_CHARS = 256


class FileInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file_id: Annotated[str, Field(max_length=NAME_CHARS)] | None = None
    file_data: str | None = None  # bounded by the request's body limit, then by DOCUMENT_MAX_FILE_BYTES
    filename: Annotated[str, Field(max_length=NAME_CHARS)] | None = None
    file_url: str | None = None  # refused: declared so the error names it

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.file_url is not None:
            raise ValueError("file_url is not supported: Hearth fetches nothing from the network on anyone's behalf. "
                             "Upload the file (purpose user_data) and send its file_id, or send its bytes as file_data.")
        if (self.file_id is None) == (self.file_data is None):
            raise ValueError("a file part names an uploaded file (file_id) or carries its bytes (file_data): one of the two")
        return self


class ChatFilePart(BaseModel):
    """Chat completions' file content part."""

    type: Literal["file"]
    file: FileInput


def check_file(fields: Any) -> None:
    """Raises ValueError with what is wrong with a file part's fields: called from the
    validators of content that is a string or a list of parts, whose failed union would
    otherwise only say "should be a valid string"."""
    try:
        FileInput.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
