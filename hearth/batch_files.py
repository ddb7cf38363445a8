"""Batch input in OpenAI's JSONL format, from what people have at hand: a `.jsonl` file as it
is, or a `.txt` file with one prompt per line (the same system prompt and answer length for
all). Used by `hearth batch` and the ui's Batch tab."""

import csv
import io
import json
from dataclasses import dataclass

ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class PromptOptions:
    model: str = ""
    system: str = ""
    max_tokens: int | None = None


def prompts_to_jsonl(text: str, options: PromptOptions) -> bytes:
    """One request line per non-blank line of `text`; custom ids are `line-<n>` (its line
    number in the text, so answers can be matched back)."""
    lines = []
    for number, prompt in enumerate(text.splitlines(), 1):
        if not prompt.strip():
            continue
        messages = ([{"role": "system", "content": options.system}] if options.system else []) + [{"role": "user", "content": prompt}]
        body: dict[str, object] = {"model": options.model, "messages": messages}
        if options.max_tokens:
            body["max_tokens"] = options.max_tokens
        lines.append(json.dumps({"custom_id": f"line-{number}", "method": "POST", "url": ENDPOINT, "body": body}))
    return "".join(line + "\n" for line in lines).encode()


def batch_input(name: str, data: bytes, options: PromptOptions) -> bytes:
    """The JSONL to upload for a file called `name`."""
    return data if name.endswith(".jsonl") else prompts_to_jsonl(data.decode("utf-8", errors="replace"), options)


def answers_csv(input_jsonl: bytes, output_jsonl: bytes, errors_jsonl: bytes) -> str:
    """Prompt and answer side by side, in input order (errors in the answer's place)."""
    answers: dict[str, str] = {}
    for raw in output_jsonl.splitlines():
        line = json.loads(raw)
        answers[line["custom_id"]] = line["response"]["body"]["choices"][0]["message"]["content"]
    for raw in errors_jsonl.splitlines():
        line = json.loads(raw)
        error = line.get("error") or (line.get("response") or {}).get("body", {}).get("error", {})
        answers.setdefault(str(line.get("custom_id")), f"[error: {error.get('message', 'failed')}]")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["custom_id", "prompt", "answer"])
    for raw in input_jsonl.splitlines():
        try:
            request = json.loads(raw)
            prompt = request["body"]["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        writer.writerow([request.get("custom_id"), prompt, answers.get(str(request.get("custom_id")), "")])
    return out.getvalue()
