"""The Shared tab: conversations others shared with this person (read-only, or continued as
their own copy), and sharing one of their own with a person or with everyone. Through the
api's sharing routes (api.sharing)."""

from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.blocks import Block

from ui.account import refused
from ui.attachments import stored_files, with_chips
from ui.client import HearthClient
from ui.untrusted import defused

TAB = "Shared"
EVERYONE = "*"
Updates = dict[Block, Any]


def transcript(conversation: dict[str, Any]) -> list[dict[str, str]]:
    """The messages as the Chatbot shows them: another person's text, defused as the chat's is
    (ui.untrusted; the Chatbot's own sanitizing leaves Markdown images, which the browser fetches),
    under the chips of the files a question attached, as the chat page shows them (ui.attachments)."""
    return [{"role": "user" if item.get("role") == "user" else "assistant",
             "content": with_chips(defused("".join(part.get("text", "") for part in item.get("content") or [])),
                                   stored_files(item) if item.get("role") == "user" else [])}
            for item in conversation.get("items") or [] if item.get("type") == "message" and item.get("role") in ("user", "assistant")]


def title(conversation: dict[str, Any]) -> str:
    return str((conversation.get("metadata") or {}).get("title") or "(untitled)")


def grantees_text(grantees: list[str]) -> str:
    if not grantees:
        return "Not shared."
    return "Shared with " + ", ".join("everyone" if g == EVERYONE else f"**{g}**" for g in grantees) + "."


@dataclass(frozen=True)
class SharedTab:
    chosen: gr.Dropdown
    reading: gr.Chatbot
    mine: gr.Dropdown
    grantees: gr.Markdown
    message: gr.Markdown

    def outputs(self) -> list[Block]:
        return [self.chosen, self.reading, self.mine, self.grantees, self.message]

    def reset(self) -> Updates:
        """Nothing of the last person stays (for a sign-out)."""
        return {self.chosen: gr.Dropdown(choices=[], value=None), self.reading: [], self.mine: gr.Dropdown(choices=[], value=None),
                self.grantees: "", self.message: ""}


def shared_tab(client: HearthClient, token: gr.State, ended: gr.State, tabs: gr.Tabs) -> SharedTab:
    with gr.Tab(TAB, id="shared"):
        gr.Markdown("### Shared with me\nRead-only; **Continue as my own copy** puts a copy among your chats.")
        chosen = gr.Dropdown(label="Conversation", choices=[], elem_id="hearth-shared-chosen")
        reading = gr.Chatbot(label="Read-only", height=320, buttons=["copy", "copy_all"], elem_id="hearth-shared-reading")
        fork = gr.Button("Continue as my own copy", elem_id="hearth-shared-fork")
        gr.Markdown("### Share one of mine")
        mine = gr.Dropdown(label="My conversation", choices=[], elem_id="hearth-shared-mine")
        grantees = gr.Markdown("", elem_id="hearth-shared-grantees")
        with gr.Row():
            whom = gr.Textbox(label="With (a name, or * for everyone)", max_lines=1, elem_id="hearth-shared-with")
            share = gr.Button("Share", elem_id="hearth-shared-share")
            stop = gr.Button("Stop sharing with them", elem_id="hearth-shared-stop")
        message = gr.Markdown("", elem_id="hearth-shared-message")
    tab = SharedTab(chosen, reading, mine, grantees, message)
    outputs = [*tab.outputs(), ended]

    async def listed(session: HearthClient) -> Updates:
        others = await session.shared()
        own = await session.conversations()
        return {chosen: gr.Dropdown(choices=[(f"{title(c)} — {c['owner']}'s", f"{c['owner']}/{c['id']}") for c in others], value=None),
                reading: [], mine: gr.Dropdown(choices=[(title(c), c["id"]) for c in own], value=None), grantees: ""}

    async def on_tab(event: gr.SelectData, key: str | None) -> Updates:
        if event.value != TAB:
            return {ended: gr.skip()}
        return await refused(listed(client.with_key(key)), message, ended)

    async def read(ref: str | None, key: str | None) -> Updates:
        if not ref:
            return {reading: []}

        async def work() -> Updates:
            owner, conv_id = ref.split("/", 1)
            return {reading: transcript(await client.with_key(key).shared_conversation(owner, conv_id)), message: ""}
        return await refused(work(), message, ended)

    async def fork_it(ref: str | None, key: str | None) -> Updates:
        if not ref:
            return {message: "Choose a conversation first."}

        async def work() -> Updates:
            owner, conv_id = ref.split("/", 1)
            copy = await client.with_key(key).fork(owner, conv_id)
            return {message: f"“{title(copy)}” is now among your chats too: open it in Chat to continue."}
        return await refused(work(), message, ended)

    async def show_grantees(conv_id: str | None, key: str | None) -> Updates:
        if not conv_id:
            return {grantees: ""}

        async def work() -> Updates:
            return {grantees: grantees_text(await client.with_key(key).shares(conv_id))}
        return await refused(work(), message, ended)

    async def change(conv_id: str | None, who: str, key: str | None, sharing: bool) -> Updates:
        if not conv_id or not who.strip():
            return {message: "Choose one of your conversations and whom to share it with."}

        async def work() -> Updates:
            session = client.with_key(key)
            now = await (session.share(conv_id, who.strip()) if sharing else session.unshare(conv_id, who.strip()))
            return {grantees: grantees_text(now), message: ""}
        return await refused(work(), message, ended)

    async def share_it(conv_id: str | None, who: str, key: str | None) -> Updates:
        return await change(conv_id, who, key, True)

    async def stop_it(conv_id: str | None, who: str, key: str | None) -> Updates:
        return await change(conv_id, who, key, False)

    quiet: dict[str, Any] = {"outputs": outputs, "show_progress": "hidden", "api_visibility": "private"}
    tabs.select(on_tab, inputs=[token], **quiet)
    chosen.input(read, inputs=[chosen, token], **quiet)
    fork.click(fork_it, inputs=[chosen, token], **quiet)
    mine.input(show_grantees, inputs=[mine, token], **quiet)
    share.click(share_it, inputs=[mine, whom, token], **quiet)
    stop.click(stop_it, inputs=[mine, whom, token], **quiet)
    return tab
