"""`POST /v1/responses` request bodies, validated once, and their translation into the chat
request that Hearth queues (a response is a chat job: api.chat.service).

Each field of OpenAI's Responses request is honoured (a field of `ResponseCreateRequest`),
refused (`REFUSED`, by the same mechanism as chat's: api.chat.schemas) or ignored (`IGNORED`)."""

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from api.chat.schemas import (
    INT32_MAX,
    NAME_CHARS,
    ChatCompletionRequest,
    Refusal,
    Text,
    empty,
    refusing,
)
from api.chat.structured import PARAM as CHAT_SCHEMA_PARAM
from api.chat.structured import JsonObjectFormat, JsonSchemaSpec, TextFormat
from api.chat.tools import (
    Description,
    FunctionDef,
    FunctionName,
    FunctionNameText,
    FunctionTool,
    NamedToolChoice,
    chat_message,
    functions_only,
)
from api.conversations.schemas import (
    AnyItem,
    FunctionCallInput,
    FunctionCallOutputInput,
    Id,
    InputFile,
    InputMessage,
    InputText,
    MessageItem,
    Metadata,
    OutputText,
    as_messages,
    item_type,
    new_id,
)
from api.documents.parts import FileInput, check_file
from api.errors import HearthError
from api.responses.store import StoredResponse
from hearth.contract import Message
from hearth.documents import DocumentRef

SCHEMA_PARAM = "text.format.schema"

REFUSED: dict[str, Refusal] = {
    "reasoning": Refusal("reasoning is not supported: Hearth's models answer directly", lambda v: v in (None, {})),
    "include": Refusal("Hearth has no additional output data to include", empty),
    "top_logprobs": Refusal("log probabilities are not returned", lambda v: v in (None, 0)),
    "prompt": Refusal("stored prompt templates are not supported"),
    "moderation": Refusal("moderation is not available"),
    "context_management": Refusal("context compaction is not supported", empty),
}
# Accepted and ignored: OpenAI's caching, billing, tiers and transport options, and settings
# of built-in tools and images, which are moot while those are refused (`max_tool_calls`
# counts built-in tool calls only). `truncation`: Hearth trims the oldest history of a chat
# that outgrows the window either way.
IGNORED = frozenset({
    "user", "safety_identifier", "service_tier", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "max_tool_calls", "stream_options", "truncation", "access_programs", "background_options", "image",
})


class ResponsesFunctionTool(BaseModel):
    """A Responses function tool: chat's function (api.chat.tools.FunctionDef), its fields beside
    `type` rather than nested. `type` comes first: a tool of another type is refused by it."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: FunctionNameText
    description: Description | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _functions_only = functions_only("tools of type {kind!r} are not supported: Hearth runs `function` tools only")

    def chat(self) -> FunctionTool:
        return FunctionTool(type="function", function=FunctionDef.model_validate(self.model_dump(exclude={"type"})))


class ResponsesToolChoice(BaseModel):
    """`{"type": "function", "name": ...}`: that function must be called."""

    type: Literal["function"]  # other types are refused by ResponseCreateRequest, naming `tool_choice`
    name: str

    def chat(self) -> NamedToolChoice:
        return NamedToolChoice(type="function", function=FunctionName(name=self.name))


class JsonSchemaTextFormat(JsonSchemaSpec):
    """Responses' `text.format` of type json_schema: chat's `json_schema`, flattened."""

    type: Literal["json_schema"]


TextFormatParam = Annotated[TextFormat | JsonObjectFormat | JsonSchemaTextFormat, Field(discriminator="type")]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: TextFormatParam | None = None


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Id


def _text_items(items: Any) -> Any:
    """A string is one user message; other item types, and parts other than text, are
    refused by name (as a failed union their errors would name a branch instead)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    for n, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") in ("function_call", "function_call_output"):
            continue
        if item.get("type", "message") != "message":
            raise ValueError(f"item {n}: input items of type {item['type']!r} are not supported: Hearth takes messages, "
                             "function calls and function call outputs")
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind not in ("input_text", "output_text", "input_file"):
                raise ValueError(f"item {n}: content parts of type {kind!r} are not supported: Hearth reads text and files (input_file)")
            if kind == "input_file":
                if item.get("role") != "user":
                    raise ValueError(f"item {n}: only a user's message may attach files (input_file)")
                check_file(part)
    return items


class FileInputPart(FileInput):
    """Responses' `input_file` part as a request sends it: an uploaded file's `file_id`, or the
    bytes as `file_data`."""

    type: Literal["input_file"]


ResponsePart = Annotated[InputText | OutputText | FileInputPart, Field(discriminator="type")]


class ResponseInput(InputMessage):
    content: str | Annotated[list[ResponsePart], Field(min_length=1)]  # type: ignore[assignment]  # a wider part type than a stored item's

    def to_item(self, documents: list[DocumentRef] | None = None) -> MessageItem:
        """The message as an item keeps it: each file part (in order) as the document read from
        it; without `documents`, its text parts alone."""
        if isinstance(self.content, str):
            return super().to_item()
        found = iter(documents or [])
        content: list[InputText | OutputText | InputFile] = []
        for part in self.content:
            if not isinstance(part, FileInputPart):
                content.append(part)
            elif documents is not None:
                content.append(InputFile.of(next(found)))
        return MessageItem(id=new_id("msg"), role=self.role, content=content)


ResponseInputItem = Annotated[
    Annotated[ResponseInput, Tag("message")] | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")],
    Discriminator(item_type),
]


class ResponseCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[Text, Field(max_length=NAME_CHARS)] = ""
    input: Annotated[list[ResponseInputItem], Field(min_length=1)]
    instructions: Text | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    metadata: Metadata | None = None
    previous_response_id: Annotated[str, Field(max_length=NAME_CHARS)] | None = None
    conversation: Id | ConversationRef | None = None
    tools: list[ResponsesFunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ResponsesToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Refused unless harmless (REFUSED); declared so that an error names the field.
    reasoning: Any = None
    include: Any = None
    top_logprobs: Any = None
    prompt: Any = None
    moderation: Any = None
    context_management: Any = None

    _refused = refusing(REFUSED)
    _text_items = field_validator("input", mode="before")(classmethod(lambda cls, items: _text_items(items)))

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _function_choice(cls, choice: Any) -> Any:
        # Named here: as a failed union its error would name a branch.
        if isinstance(choice, dict) and choice.get("type") != "function":
            raise ValueError(f"a tool_choice of type {choice.get('type')!r} is not supported: name a function, or use none, auto or required")
        return choice

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation

    def file_parts(self) -> list[list[tuple[str, FileInput]]]:
        """Each input message's file parts, with the field that holds each (for errors)."""
        return [[(f"input.{n}.content.{j}", p) for j, p in enumerate(m.content) if isinstance(p, FileInputPart)]
                if isinstance(m, ResponseInput) and isinstance(m.content, list) else [] for n, m in enumerate(self.input)]

    def input_items(self, documents: Sequence[list[DocumentRef]] | None = None) -> list[AnyItem]:
        """The input as items keep it: each message's file parts as the `documents` read from
        them (one list per input item), or without `documents` its text parts alone."""
        return [m.to_item(None if documents is None else documents[n]) if isinstance(m, ResponseInput) else m.to_item()
                for n, m in enumerate(self.input)]

    def stored(self, job_id: str, created_at: int, model: str, history: list[Message], documents: Sequence[list[DocumentRef]]) -> StoredResponse:
        """What is kept of the request, to answer for the response later; its file parts as the
        `documents` read from them (one list per input item)."""
        fmt = self.text.format if self.text else None
        return StoredResponse(
            job_id=job_id, created_at=created_at, model=model, instructions=self.instructions,
            input=self.input_items(documents), history=history, max_output_tokens=self.max_output_tokens,
            temperature=self.temperature, top_p=self.top_p, text_format=fmt.model_dump(by_alias=True) if fmt else {"type": "text"},
            metadata=self.metadata or {}, previous_response_id=self.previous_response_id, conversation=self.conversation_id,
            background=self.background, tools=[t.model_dump(exclude_none=True) for t in self.tools or []],
            tool_choice=self.tool_choice.model_dump() if isinstance(self.tool_choice, ResponsesToolChoice) else self.tool_choice or "auto",
            parallel_tool_calls=self.parallel_tool_calls is not False,
        )

    def input_messages(self, history: Sequence[Message], documents: Sequence[list[DocumentRef]] | None = None) -> list[Message]:
        """The input as the chat's messages after `history` (calls joined to the assistant's
        message they follow), a call `history` holds already not made twice."""
        return as_messages(self.input_items(documents), history)

    def to_chat(self, history: list[Message]) -> ChatCompletionRequest:
        """The chat Hearth queues: the instructions, `history` (earlier turns), then the input."""
        fmt = self.text.format if self.text else None
        if isinstance(fmt, JsonSchemaTextFormat):
            response_format: dict[str, Any] | None = {"type": "json_schema", "json_schema": fmt.model_dump(by_alias=True, exclude={"type"})}
        else:
            response_format = fmt.model_dump() if fmt else None
        system = [Message(role="system", content=self.instructions)] if self.instructions else []
        messages = [chat_message(m) for m in [*system, *history, *self.input_messages(history)]]
        choice = self.tool_choice.chat() if isinstance(self.tool_choice, ResponsesToolChoice) else self.tool_choice
        try:
            return ChatCompletionRequest.model_validate({
                "model": self.model, "messages": messages, "max_tokens": self.max_output_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "response_format": response_format,
                "tools": None if self.tools is None else [t.chat() for t in self.tools], "tool_choice": choice,
                "parallel_tool_calls": self.parallel_tool_calls,
            })
        except ValidationError as exc:
            first = exc.errors()[0]
            raise HearthError(400, f"input: {first['msg']}", param="input") from None


def as_responses_error(exc: HearthError) -> HearthError:
    """A chat check's error, naming the Responses field it is about (`input` for chat's
    `messages`, `text.format.schema` for its `response_format`'s schema)."""
    param = exc.param or ""
    if param.startswith("messages"):
        renamed = "input"
    elif param.startswith(CHAT_SCHEMA_PARAM):
        renamed = SCHEMA_PARAM
    elif param == "max_tokens":
        renamed = "max_output_tokens"
    elif param == "response_format":
        renamed = "text.format"
    elif param.startswith("tools.") and ".function." in param:  # a Responses tool has its function's fields itself
        renamed = param.replace(".function.", ".", 1)
    else:
        return exc
    message = exc.message.replace(param, renamed, 1) if exc.message.startswith(param) else exc.message
    return HearthError(exc.status, message, exc.type, exc.code, renamed, exc.headers)
