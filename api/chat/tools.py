"""Function calling in a chat request: `tools`, `tool_choice`, `parallel_tool_calls`, the legacy
`functions` and `function_call` mapped onto them, and the calls and results in `messages`.

Each function's `parameters` is checked like a `response_format` schema (api.chat.structured):
what the grammar cannot enforce is refused with 400 naming it, so a call's arguments always
parse and validate. The worker (worker.tool_calls) shows the tools to the model and turns
its answer into calls.
"""

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.chat.structured import Unsupported, enforced_schema
from api.chat.text import Text
from api.errors import HearthError
from hearth.contract import FunctionSpec, Message, ToolCall, ToolUse

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
MAX_DESCRIPTION = 8192  # characters of one function's description


FunctionNameText = Annotated[str, Field(pattern=NAME_PATTERN)]
Description = Annotated[Text, Field(max_length=MAX_DESCRIPTION)]


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: FunctionNameText
    description: Description | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # every accepted schema is enforced, strict or not


def functions_only(message: str) -> Any:
    """The validator of a `type` that must be `function`, refusing others with `message`
    (formatted with the type given): as a literal's error it would not name the type."""

    def check(cls: type, kind: Any) -> Any:
        if kind != "function":
            raise ValueError(message.format(kind=kind))
        return kind

    return field_validator("type", mode="before")(classmethod(check))


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDef

    _functions_only = functions_only("tools of type {kind!r} are not supported: Hearth runs `function` tools only")


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName

    _functions_only = functions_only("a tool_choice of type {kind!r} is not supported: name a function, or use none, auto or required")


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
FunctionCallChoice = Literal["none", "auto"] | FunctionName


class CallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text
    arguments: Text


class CallIn(BaseModel):
    """A call in an assistant message of the history."""

    model_config = ConfigDict(extra="ignore")

    id: Text
    type: Literal["function"] = "function"
    function: CallFunction


def tool_use(tools: list[FunctionTool] | None, choice: ToolChoice | None, parallel: bool | None,
             functions: list[FunctionDef] | None, function_call: FunctionCallChoice | None) -> ToolUse | None:
    """What the worker needs, or None when no function may be called; 400 naming the field
    for a schema that cannot be enforced or a choice of a function that is not offered."""
    if functions is not None:
        if tools is not None:
            raise HearthError(400, "functions: give either tools or the legacy functions, not both.", param="functions")
        tools = [FunctionTool(type="function", function=f) for f in functions]
        choice = NamedToolChoice(type="function", function=function_call) if isinstance(function_call, FunctionName) else function_call
        parallel, param = False, "functions"  # a legacy answer holds one call
    else:
        param = "tools"
    defs = [t.function for t in tools or []]
    names = [f.name for f in defs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise HearthError(400, f"{param}.{i}: the function name {name!r} is used twice.", param=f"{param}.{i}")
    specs = [_spec(f, f"{param}.{i}.function.parameters" if param == "tools" else f"{param}.{i}.parameters") for i, f in enumerate(defs)]
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            choice_param = "tool_choice" if param == "tools" else "function_call"
            raise HearthError(400, f"{choice_param}: {choice.function.name!r} is not among the functions offered.", param=choice_param)
        specs = [s for s in specs if s.name == choice.function.name]
    if not specs or choice == "none":
        if choice == "required":
            raise HearthError(400, "tool_choice: 'required' needs tools.", param="tool_choice")
        return None
    mode: Literal["auto", "required"] = "required" if choice == "required" or isinstance(choice, NamedToolChoice) else "auto"
    return ToolUse(functions=specs, mode=mode, parallel=parallel is not False)


def _spec(function: FunctionDef, param: str) -> FunctionSpec:
    parameters = NO_PARAMETERS if function.parameters is None else function.parameters
    try:
        enforced = enforced_schema(parameters)
    except Unsupported as exc:
        raise HearthError(400, f"{param}: {exc}", param=param) from None
    if enforced.get("type") != "object":
        raise HearthError(400, f"{param}: a function's parameters must be a schema of `type: object`.", param=param)
    return FunctionSpec(name=function.name, description=function.description or "", parameters=parameters, enforced=enforced)


def chat_message(message: Message) -> dict[str, Any]:
    """A contract message as chat completions spell it (a history kept by Hearth, sent as a chat)."""
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls]
    return {"role": message.role, "content": message.content, **({"tool_calls": calls} if calls else {}),
            **({"tool_call_id": message.tool_call_id} if message.tool_call_id is not None else {})}


def unanswered(messages: Sequence[Message]) -> set[str]:
    """The ids of the calls of the last answer in `messages` that no tool message after it answers
    yet: what a conversation turn's results may answer (an earlier answer's calls are settled)."""
    for n in range(len(messages) - 1, -1, -1):
        if messages[n].role == "assistant":
            return {c.id for c in messages[n].tool_calls} - {m.tool_call_id for m in messages[n + 1:] if m.role == "tool"}
    return set()


def history(messages: list[tuple[str, str, list[CallIn], str | None]], before: Iterable[str] = ()) -> list[Message]:
    """The chat's (role, text, calls, answered call id) as contract messages; a tool message
    must answer a call made earlier in the chat, or one of the ids made `before` it (400 naming it)."""
    out: list[Message] = []
    made: set[str] = set(before)
    for i, (role, text, calls, call_id) in enumerate(messages):
        if role == "tool" and call_id not in made:
            param = f"messages.{i}.tool_call_id"
            raise HearthError(400, f"{param}: a tool message must answer a call of an earlier assistant message "
                                   f"(no tool_calls id {call_id!r} before it).", param=param)
        made.update(c.id for c in calls)
        out.append(Message(role=role, content=text,
                           tool_calls=[ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in calls],
                           tool_call_id=call_id if role == "tool" else None))
    return out
