"""Conversation objects and request bodies, shaped as the openai package's
`types/conversations` (Hearth keeps messages with the files they attached, function calls and
their outputs). Bounds that are OpenAI's own are constants here (metadata's in hearth.metadata,
which the ui shares); the per-user caps are settings (api.settings). Items and contract messages
convert here, both ways: a conversation's history for the model, and a chat's new messages as items."""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from api.chat.text import Text
from api.chat.tools import NAME_PATTERN
from hearth.contract import Message, ToolCall
from hearth.documents import Citation, DocumentRef
from hearth.metadata import METADATA_KEY_CHARS, METADATA_PAIRS, METADATA_VALUE_CHARS

MAX_ITEMS_PER_REQUEST = 20  # OpenAI's bound for create and items.create
NAME_CHARS = 256  # a file's id and name
TITLE_KEY = "title"  # the metadata key a chat app shows as the conversation's name
ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"  # ids become parts of Redis keys: no ':', no glob characters
CALL_ID_CHARS = 256  # a call's id, as a client echoes it
ROUTE_NAMES = frozenset({"defaults", "export", "import"})  # paths beside `/v1/conversations/{id}`: never an id

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Metadata = Annotated[
    dict[Annotated[str, StringConstraints(max_length=METADATA_KEY_CHARS)], Annotated[str, StringConstraints(max_length=METADATA_VALUE_CHARS)]],
    Field(max_length=METADATA_PAIRS),
]
Role = Literal["user", "assistant", "system", "developer"]
Status = Literal["completed", "incomplete", "in_progress"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


class InputText(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class FileCitation(BaseModel):
    """An attached document the answer was given from (hearth.documents.Citation), as an
    `output_text` annotation (`openai.types.responses.ResponseOutputText`'s file citation) and as
    an entry of a chat completion's `citations`. Hearth adds the part read: `page` and `chunk`
    (its place among the document's chunks), both null when the document was read whole."""

    type: Literal["file_citation"] = "file_citation"
    file_id: Annotated[str, StringConstraints(max_length=256)]
    filename: Annotated[str, StringConstraints(max_length=1024)]
    index: Annotated[int, Field(ge=0)]  # where in the text it applies: the answer's end (Hearth cites the whole answer)
    page: Annotated[int, Field(ge=0)] | None = None
    chunk: Annotated[int, Field(ge=0)] | None = None


def file_citations(citations: Sequence[Citation], index: int) -> list[FileCitation]:
    return [FileCitation(file_id=c.document_id, filename=c.filename, index=index, page=c.page, chunk=c.chunk) for c in citations]


MAX_ANNOTATIONS = 4096  # an answer's citations: one per part of a document read, within any window


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: Annotated[list[FileCitation], Field(max_length=MAX_ANNOTATIONS)] = []

    @field_validator("annotations", mode="before")
    @classmethod
    def _file_citations(cls, value: Any) -> Any:
        """File citations (Hearth's own, bounded) are kept, as an export brings them back;
        others a client may send (url citations...) are not Hearth's and are left out."""
        if not isinstance(value, list):
            return value
        return [a for a in value if isinstance(a, FileCitation) or (isinstance(a, dict) and a.get("type") == "file_citation")]


class InputFile(BaseModel):
    """A file a user's message attached, as an item keeps it (OpenAI's `input_file` part): the
    id of the document read from it (an uploaded file's, or the one given to inline
    `file_data`) and its filename, so an export says which files a conversation used."""

    type: Literal["input_file"]
    file_id: Annotated[str, Field(max_length=NAME_CHARS)]
    filename: Annotated[str, Field(max_length=NAME_CHARS)]

    @classmethod
    def of(cls, ref: DocumentRef) -> "InputFile":
        return cls(type="input_file", file_id=ref.document_id, filename=ref.filename)


Part = Annotated[InputText | OutputText | InputFile, Field(discriminator="type")]


class MessageItem(BaseModel):
    """A stored message, as `openai.types.conversations.Message`."""

    type: Literal["message"] = "message"
    id: Id
    role: Role
    status: Status = "completed"
    content: list[Part]

    def text(self) -> str:
        return "\n".join(part.text for part in self.content if not isinstance(part, InputFile))

    def documents(self) -> list[DocumentRef]:
        """The documents it attached."""
        return [DocumentRef(document_id=p.file_id, filename=p.filename) for p in self.content if isinstance(p, InputFile)]


class FunctionCallItem(BaseModel):
    """A function call the model made, as `openai.types.responses.ResponseFunctionToolCallItem`:
    `call_id` is the id its output answers (a chat's `tool_calls` id), `id` the item's own."""

    type: Literal["function_call"]
    id: Id
    call_id: str  # as the call was made (a request's own are checked by FunctionCallInput)
    name: str
    arguments: str
    status: Status = "completed"

    def text(self) -> str:
        return f"{self.name}({self.arguments})"


class FunctionCallOutputItem(BaseModel):
    """A function's result, as `openai.types.responses.ResponseFunctionToolCallOutputItem`
    (text output only)."""

    type: Literal["function_call_output"]
    id: Id
    call_id: str
    output: str
    status: Status = "completed"

    def text(self) -> str:
        return self.output


AnyItem = MessageItem | FunctionCallItem | FunctionCallOutputItem


def attached(items: Sequence[AnyItem]) -> list[DocumentRef]:
    """The documents the items' messages attached."""
    return [ref for item in items if isinstance(item, MessageItem) for ref in item.documents()]


def item_type(value: Any) -> str:
    """A message may leave out its `type` (OpenAI's EasyInputMessage); other items name theirs."""
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in ("function_call", "function_call_output") else "message"


Item = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(item_type),
]
ITEM: TypeAdapter[AnyItem] = TypeAdapter(Item)  # a stored item's JSON, read back


def call_item_id(job_id: str, n: int) -> str:
    """The item id of the answer's call `n`: the same in a response's output and in its
    conversation, so a client that sends the call back adds nothing."""
    return f"fc_{job_id}_{n}"


def call_item(call: ToolCall, item_id: str, status: Status = "completed") -> FunctionCallItem:
    return FunctionCallItem(type="function_call", id=item_id, call_id=call.id, name=call.name, arguments=call.arguments, status=status)


def output_item(result: Message) -> FunctionCallOutputItem:
    """A tool message (a function's result) as a new item."""
    return FunctionCallOutputItem(type="function_call_output", id=new_id("fco"), call_id=result.tool_call_id or "", output=result.content)


def not_made(items: Sequence[AnyItem], history: Sequence[Message] = ()) -> list[AnyItem]:
    """`items` less the function calls made already (in `history`, or by an earlier item): a
    client sends an answer's call back with its output (as the Agents SDK does, with or without
    its item id), where a conversation or a previous response has it already."""
    made = {call.id for m in history for call in m.tool_calls}
    out: list[AnyItem] = []
    for item in items:
        if isinstance(item, FunctionCallItem):
            if item.call_id in made:
                continue
            made.add(item.call_id)
        out.append(item)
    return out


def as_messages(items: Sequence[AnyItem], history: Sequence[Message] = ()) -> list[Message]:
    """Items as the chat the model continues after `history`: calls join the assistant's message
    they follow (or make one), and each output is a tool message answering its call; a call
    made already is not made again (`not_made`)."""
    out: list[Message] = []
    for item in not_made(items, history):
        if isinstance(item, FunctionCallItem):
            call = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments)
            if out and out[-1].role == "assistant":
                out[-1] = out[-1].model_copy(update={"tool_calls": [*out[-1].tool_calls, call]})
            else:
                out.append(Message(role="assistant", content="", tool_calls=[call]))
        elif isinstance(item, FunctionCallOutputItem):
            out.append(Message(role="tool", content=item.output, tool_call_id=item.call_id))
        else:
            out.append(Message(role=item.role, content=item.text(), documents=item.documents()))
    return out


def chat_history(items: Sequence[AnyItem]) -> list[Message]:
    """Stored items as the chat the model continues. An output whose call is not before it
    (deleted, or stored on its own) is left out: the model could not tell what it answers, and
    the chat would be refused."""
    called: set[str] = set()
    history = []
    for m in as_messages(items):
        called.update(call.id for call in m.tool_calls)
        if m.role != "tool" or m.tool_call_id in called:
            history.append(m)
    return history


def turn_items(messages: Sequence[Message]) -> list[AnyItem]:
    """A conversation turn's new messages as the items they are stored as: a tool message (a
    function's result) as its output item, a question as a message with its documents."""
    return [output_item(m) if m.role == "tool" else message(m.role, m.content, documents=m.documents) for m in messages]


def message(role: Role, text: str, status: Status = "completed", documents: list[DocumentRef] | None = None,
            citations: Sequence[Citation] = ()) -> MessageItem:
    """A new message item: the model's words are `output_text` (with the documents it was
    given from), everyone else's `input_text`, then the documents it attached."""
    part = OutputText(text=text, annotations=file_citations(citations, len(text))) if role == "assistant" else InputText(text=text)
    files: list[InputText | OutputText | InputFile] = [InputFile.of(ref) for ref in documents or []]
    return MessageItem(id=new_id("msg"), role=role, status=status, content=[part, *files])


class Conversation(BaseModel):
    """As `openai.types.conversations.Conversation`."""

    id: Id
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str]
    # Hearth's own, for a chat page that reloads mid-answer: the job still writing this
    # conversation's answer (stream it from `/v1/jobs/{id}/events`), else null.
    hearth_job_id: str | None = None


class InputMessage(BaseModel):
    """A message as the client sends it (EasyInputMessage or a full input/output message);
    any id it carries is replaced, so a client cannot collide with stored items."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Role
    content: str | Annotated[list[Part], Field(min_length=1)]

    @model_validator(mode="after")
    def _files_from_users(self) -> "InputMessage":
        if self.role != "user" and isinstance(self.content, list) and any(isinstance(p, InputFile) for p in self.content):
            raise ValueError("only a user's message may attach files (input_file)")
        return self

    def to_item(self) -> MessageItem:
        if isinstance(self.content, str):
            return message(self.role, self.content)
        return MessageItem(id=new_id("msg"), role=self.role, content=self.content)


class FunctionCallInput(BaseModel):
    """A function call the client sends back (as the model made it): its id is kept, so the
    call an answer stored in a conversation is not stored twice."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    id: Id | None = None
    call_id: Annotated[Text, Field(min_length=1, max_length=CALL_ID_CHARS)]
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    arguments: Text

    def to_item(self) -> FunctionCallItem:
        return FunctionCallItem(type="function_call", id=self.id or new_id("fc"), call_id=self.call_id, name=self.name, arguments=self.arguments)


class FunctionCallOutputInput(BaseModel):
    """A function's result for a call, as text (a string, or `input_text` parts)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    id: Id | None = None
    call_id: Annotated[Text, Field(min_length=1, max_length=CALL_ID_CHARS)]
    output: Text | list[InputText]

    def to_item(self) -> FunctionCallOutputItem:
        output = self.output if isinstance(self.output, str) else "\n".join(part.text for part in self.output)
        return FunctionCallOutputItem(type="function_call_output", id=self.id or new_id("fco"), call_id=self.call_id, output=output)


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")] | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")],
    Discriminator(item_type),
]
InputItems = Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)]


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: Annotated[list[InputItem], Field(max_length=MAX_ITEMS_PER_REQUEST)] | None = None
    metadata: Metadata | None = None


class UpdateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: Metadata | None  # required, as OpenAI's; null clears it


class ConversationDefaults(BaseModel):
    object: Literal["hearth.conversation_defaults"] = "hearth.conversation_defaults"
    metadata: Metadata


class CreateItems(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: InputItems


class ExportedConversation(Conversation):
    """One conversation in Hearth's export file: the conversation, its activity time (which
    orders the list) and its messages, ids kept so that importing twice adds nothing."""

    model_config = ConfigDict(extra="ignore")

    metadata: Metadata
    hearth_job_id: None = Field(None, exclude=True)  # an answer in progress is not exported
    last_active_ms: int = 0
    items: list[Item] = []

    @field_validator("id")
    @classmethod
    def _not_a_route(cls, conv_id: str) -> str:
        if conv_id in ROUTE_NAMES:
            raise ValueError(f"{conv_id!r} names a route of /v1/conversations, not a conversation")
        return conv_id

    def markdown(self) -> str:
        when = datetime.fromtimestamp(self.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"# {self.metadata.get(TITLE_KEY) or 'Conversation'}", "", f"*Hearth conversation `{self.id}`, started {when}.*"]
        for item in self.items:
            if isinstance(item, MessageItem):
                lines += ["", f"**{item.role.capitalize()}**", "", item.text()]
                lines += [f"*Attached: {ref.filename} (`{ref.document_id}`)*" for ref in item.documents()]
            elif isinstance(item, FunctionCallItem):
                lines += ["", f"*Function call `{item.call_id}`:* `{item.name}`", "", f"```json\n{item.arguments}\n```"]
            else:
                lines += ["", f"*Function output for `{item.call_id}`:*", "", f"```\n{item.output}\n```"]
        return "\n".join(lines) + "\n"


class ConversationExport(BaseModel):
    """`GET /v1/conversations/export`, and what `POST /v1/conversations/import` takes back."""

    model_config = ConfigDict(extra="ignore")

    object: Literal["hearth.conversation_export"] = "hearth.conversation_export"
    version: Literal[1] = 1
    exported_at: int = 0
    conversations: list[ExportedConversation]


def cursor_page(objects: Sequence[AnyItem] | Sequence[Conversation], has_more: bool = False) -> dict[str, object]:
    """OpenAI's list object (`ConversationItemList`); the client pages on `last_id` and `has_more`."""
    return {
        "object": "list",
        "data": [o.model_dump() for o in objects],
        "first_id": objects[0].id if objects else None,
        "last_id": objects[-1].id if objects else None,
        "has_more": has_more,
    }
