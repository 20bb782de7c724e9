"""The chat page: the conversation sidebar, the model picker, the chat, its settings."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from chatcore.library import ModelLibrary
from chatcore.library_errors import LibraryError
from chatcore.manager import ModelManager, ModelStatus, ModelUnavailable, UnknownModel
from chatcore.presets import BUILTIN_PRESETS
from chatcore.store import Store
from chatui.attachment_controls import AttachmentControls
from chatui.chat_handlers import ChatHandlers
from chatui.conversations import ConversationHandlers
from chatui.sampling_controls import (
    seed_number,
    seed_value,
    slider,
    think_choice,
    think_radio,
)


def model_choices(manager: ModelManager) -> list[tuple[str, str]]:
    return [(_choice_label(manager, s), s.id) for s in manager.statuses()]


def _choice_label(manager: ModelManager, status: ModelStatus) -> str:
    label = status.name
    entry = manager.registry.get(status.id)
    if entry is not None:
        label = entry.display_name + (" ⚠ remote code" if entry.trust_remote_code else "")
        if entry.chat_template == "none":
            label += " · completion mode"
        if manager.template_warnings(status.id):
            label += " ⚠ template"
    return label if status.usable else f"{label} ({status.state.value})"


def model_info(manager: ModelManager, model_id: str | None,
               library: ModelLibrary | None = None) -> str:
    if not model_id:
        return "Choose a model."
    try:
        entry = manager.entry(model_id)
    except (UnknownModel, ModelUnavailable) as exc:
        return f"⚠️ {exc}"
    status = manager.status(model_id)
    lines = [f"**{entry.name}** · `{entry.settings_label}` · context {entry.context_length}"
             f" tokens · {status.state.value}"]
    if placement := manager.placement(model_id):
        lines.append(f"Loaded on: {placement}")
    if entry.trust_remote_code:
        lines.append("⚠️ trust_remote_code: this model runs Python code from its repository.")
    if status.reason:
        lines.append(f"⚠️ {status.reason}")
    if library is not None and library.can_download(model_id):
        lines.append(f"Download: {library.remote_summary(model_id)} (the button below "
                     "fetches it; Models shows the progress)")
    lines += [f"⚠️ {warning}" for warning in manager.template_warnings(model_id)]
    if entry.description:
        lines.append(entry.description)
    return "  \n".join(lines)


def select_model(manager: ModelManager, model_id: str,
                 library: ModelLibrary | None = None) -> tuple:
    """The info panel and the entry's generation defaults, for a newly chosen model."""
    try:
        defaults = manager.entry(model_id).defaults
    except (UnknownModel, ModelUnavailable):
        return (model_info(manager, model_id),) + (gr.update(),) * 8
    return (model_info(manager, model_id, library), defaults.temperature, defaults.top_p,
            defaults.top_k, defaults.max_new_tokens, defaults.repetition_penalty,
            seed_value(defaults), think_choice(defaults.think), defaults.thinking_budget)


def _download(library: ModelLibrary | None, model_id: str, request: gr.Request) -> str:
    if library is None:
        return ""
    try:
        library.download_entry(model_id, user=getattr(request, "username", None) or None)
    except (LibraryError, UnknownModel, ModelUnavailable) as exc:
        return f"⚠️ {exc}"
    return f"Downloading **{model_id}**: the Models tab shows the progress."


def build_chat_tab(app: gr.Blocks, manager: ModelManager, store: Store, initial_model: str,
                   export_dir: Path, library: ModelLibrary | None = None) -> gr.Dropdown:
    """Builds the tab; returns its model picker, whose choices follow the registry."""
    chat = ChatHandlers(manager, store)
    files = AttachmentControls(chat.attachments)
    convs = ConversationHandlers(manager, store, chat, export_dir)
    defaults = manager.entry(initial_model).defaults
    conversation_id = gr.State(None)
    editing = gr.State(False)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=220, elem_id="sidebar"):
            new_chat = gr.Button("+ New chat", variant="primary", elem_id="new-chat")
            search = gr.Textbox(placeholder="Search titles and messages", show_label=False,
                                elem_id="search")
            conversations = gr.Radio(choices=[], label="Conversations", elem_id="conversations")
            with gr.Accordion("This conversation", open=False, elem_id="conversation-actions"):
                title = gr.Textbox(label="Title", elem_id="title")
                rename = gr.Button("Rename", size="sm", elem_id="rename")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete")
                with gr.Row(visible=False, elem_id="confirm-delete") as confirm_row:
                    confirm = gr.Button("Delete for good", size="sm", variant="stop",
                                        elem_id="confirm-delete-yes")
                    keep = gr.Button("Keep", size="sm", elem_id="confirm-delete-no")
                with gr.Row():
                    export_md = gr.Button("Export .md", size="sm", elem_id="export-md")
                    export_json = gr.Button("Export .json", size="sm", elem_id="export-json")
                with_thoughts = gr.Checkbox(label="Include thoughts in exports", value=False,
                                            elem_id="export-thoughts")
                download = gr.File(label="Download", visible=False, interactive=False,
                                   elem_id="download")
                upload = gr.UploadButton("Import .json", file_types=[".json"], size="sm",
                                         elem_id="import")
            sidebar_status = gr.Markdown(elem_id="sidebar-status")
        with gr.Column(scale=4):
            with gr.Row():
                model = gr.Dropdown(choices=model_choices(manager), value=initial_model,
                                    label="Model", scale=2, interactive=True, elem_id="model")
                with gr.Column(scale=3):
                    info = gr.Markdown(model_info(manager, initial_model, library),
                                       elem_id="model-info")
                    fetch = gr.Button("Download this model", size="sm", elem_id="model-download",
                                      visible=bool(library and library.can_download(initial_model)))
            chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chatbot", sanitize_html=True,
                                 render_markdown=True, buttons=["copy"], feedback_options=None,
                                 allow_tags=False)
            with gr.Row():
                message = gr.Textbox(placeholder="Type a message and press Enter",
                                     show_label=False, scale=8, lines=1, max_lines=8,
                                     elem_id="message", autofocus=True)
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
            with gr.Row(equal_height=True):
                attach = gr.UploadButton("Attach files", file_count="multiple", size="sm",
                                         scale=0, elem_id="attach")
                chips = gr.Markdown(elem_id="attachments")
                clear_attached = gr.Button("Remove attachments", size="sm", scale=0,
                                           elem_id="attachments-clear")
            pending = gr.State([])
            meter = gr.Markdown(elem_id="context-meter")
            with gr.Row():
                regenerate = gr.Button("Regenerate", size="sm", elem_id="regenerate")
                edit = gr.Button("Edit last message", size="sm", elem_id="edit")
                continue_ = gr.Button("Continue", size="sm", elem_id="continue")
            with gr.Accordion("Inspector: what the model received for the last reply",
                              open=False, elem_id="inspector"):
                inspector_prompt = gr.Code(label="The prompt, after the chat template",
                                           interactive=False, elem_id="inspector-prompt",
                                           wrap_lines=True)
                inspector_details = gr.Markdown(elem_id="inspector-details")
            with gr.Accordion("Earlier replies", open=False):
                earlier = gr.Markdown(elem_id="earlier")
            with gr.Accordion("Parameters", open=False):
                with gr.Row():
                    preset = gr.Dropdown(choices=list(BUILTIN_PRESETS), value=None,
                                         label="System prompt preset", elem_id="preset")
                    preset_name = gr.Textbox(label="Save the prompt below as", scale=1,
                                             elem_id="preset-name")
                    save_preset = gr.Button("Save preset", size="sm", elem_id="save-preset")
                system = gr.Textbox(label="System prompt", lines=2, elem_id="system",
                                    placeholder="Empty: the model's own default")
                with gr.Row():
                    temperature = slider("temperature", defaults.temperature,
                                         elem_id="temperature")
                    top_p = slider("top_p", defaults.top_p, elem_id="top-p")
                    top_k = slider("top_k", defaults.top_k, elem_id="top-k")
                with gr.Row():
                    max_new_tokens = slider("max_new_tokens", defaults.max_new_tokens,
                                            elem_id="max-new-tokens")
                    repetition_penalty = slider("repetition_penalty",
                                                defaults.repetition_penalty,
                                                elem_id="repetition-penalty")
                    seed = seed_number(seed_value(defaults), elem_id="seed")
                with gr.Row():
                    think = think_radio(defaults.think, elem_id="think")
                    thinking_budget = slider("thinking_budget", defaults.thinking_budget,
                                             elem_id="thinking-budget")

    params = [model, system, temperature, top_p, top_k, max_new_tokens, repetition_penalty,
              seed, think, thinking_budget]
    reply_outputs = [chatbot, message, conversation_id, editing]
    sending = [message, conversation_id, editing, *params, pending]
    replies = [
        message.submit(chat.send, sending, reply_outputs, api_name="send"),
        send.click(chat.send, sending, reply_outputs, api_name=False),
        regenerate.click(chat.regenerate, [conversation_id, *params], reply_outputs,
                         api_name="regenerate"),
        continue_.click(chat.continue_reply, [conversation_id, *params], reply_outputs,
                        api_name="continue"),
    ]
    open_outputs = [chatbot, conversation_id, editing, title, model, system, temperature,
                    top_p, top_k, max_new_tokens, repetition_penalty, earlier]
    meter_inputs = [message, conversation_id, model, system, max_new_tokens, pending]
    for sent in replies[:2]:  # the attachments went with the message
        sent.then(lambda: ([], ""), None, [pending, chips], api_name=False, queue=False)
    attach.upload(files.attach, [attach, pending], [pending, chips], api_name=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    message.input(files.paste, [message, pending], [message, pending, chips], api_name=False,
                  queue=False, trigger_mode="always_last")
    clear_attached.click(lambda: ([], ""), None, [pending, chips], api_name=False,
                         queue=False)
    for reply in replies:  # then: the list (a new title), earlier versions, the model panel
        reply.then(convs.after_reply, [search, conversation_id], [conversations, title, earlier],
                   api_name=False, queue=False) \
             .then(lambda m: (model_info(manager, m, library),
                              gr.update(choices=model_choices(manager))),
                   [model], [info, model], api_name=False, queue=False) \
             .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
                   api_name=False, queue=False) \
             .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
                   show_progress="hidden")
    # The meter follows the draft as it is typed; only the latest keystroke is counted.
    message.change(chat.meter, meter_inputs, [meter], api_name=False, show_progress="hidden",
                   trigger_mode="always_last")
    edit.click(chat.edit_last, [conversation_id], [message, editing], api_name=False,
               queue=False)
    stop.click(chat.stop, None, None, api_name="stop", queue=False)
    # A new chat ends the running reply too, so its last update cannot bring the old one back.
    new_outputs = [chatbot, conversation_id, editing, message, conversations, title, earlier]
    new_chat.click(convs.new_chat, None, new_outputs, api_name="new_chat", queue=False,
                   cancels=replies)
    chatbot.clear(convs.new_chat, None, new_outputs, api_name=False, queue=False,
                  cancels=replies)
    conversations.input(convs.open, [conversations], open_outputs, api_name="open",
                        queue=False) \
        .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
              api_name=False, queue=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    search.change(convs.refresh, [search, conversation_id], [conversations], api_name=False,
                  queue=False)
    rename.click(convs.rename, [conversation_id, title, search], [conversations, sidebar_status],
                 api_name="rename", queue=False)
    delete.click(convs.ask_delete, [conversation_id], [confirm_row, sidebar_status],
                 api_name=False, queue=False)
    confirm.click(convs.confirm_delete, [conversation_id, search],
                  [confirm_row, sidebar_status, conversations, chatbot, conversation_id, title],
                  api_name="delete", queue=False)
    keep.click(convs.cancel_delete, None, [confirm_row, sidebar_status], api_name=False,
               queue=False)
    export_md.click(convs.export_markdown, [conversation_id, with_thoughts],
                    [download, sidebar_status], api_name=False)
    export_json.click(convs.export_json, [conversation_id, with_thoughts],
                      [download, sidebar_status], api_name=False)
    upload.upload(convs.import_file, [upload, search], [conversations, sidebar_status],
                  api_name=False) \
        .then(convs.open, [conversations], open_outputs, api_name=False, queue=False)
    preset.input(convs.apply_preset, [preset], [system], api_name=False, queue=False)
    save_preset.click(convs.save_preset, [preset_name, system], [preset, sidebar_status],
                      api_name=False, queue=False)
    model.change(lambda m: select_model(manager, m, library), [model],
                 [info, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed,
                  think, thinking_budget],
                 api_name=False)
    model.change(lambda m: gr.update(visible=bool(library and library.can_download(m))),
                 [model], [fetch], api_name=False, queue=False)
    fetch.click(lambda m, request: _download(library, m, request), [model], [info],
                api_name=False)
    app.load(convs.on_page_load, None, [conversations, preset], api_name=False)
    gr.api(convs.api_list, api_name="conversations")
    gr.api(convs.api_get, api_name="conversation")
    return model
