"""The chat page: the conversation sidebar, the model picker, the chat, its settings."""
from __future__ import annotations


from collections.abc import Sequence

import gradio as gr

from chatcore.costs.book import CostBook
from chatcore.i18n import Texts, state_key
from chatcore.library.model_library import ModelLibrary
from chatcore.library.errors import LibraryError
from chatcore.generation.manager import ModelManager, ModelStatus, ModelUnavailable, UnknownModel
from chatcore.conversations.presets import builtin_presets
from chatcore.conversations.running import RunningReplies
from chatcore.conversations.store import MAX_MESSAGE_CHARS, Store
from chatui.answer_controls import AnswerControls
from chatui.attachment_controls import READING, AttachmentControls
from chatui.branch_controls import BRANCH_CSS, FLIP_JS, BranchControls
from chatui.chat_handlers import ChatHandlers
from chatui.conversations import ConversationHandlers
from chatui.exports import ExportFiles
from chatui.library_handlers import remote_summary
from chatui.model_filters import FilterControls, matching_ids, tag_filter
from backends.model_tags import TagFilter
from chatui.sampling_controls import FIELDS, SettingsControls, with_settings


def model_choices(manager: ModelManager, *, texts: Texts,
                  only: TagFilter = TagFilter()) -> list[tuple[str, str]]:
    """The picker's (label, id) pairs: every model, or those tagged as `only` asks."""
    shown = matching_ids(manager, only)
    return [(_choice_label(manager, s, texts), s.id) for s in manager.statuses()
            if s.id in shown or not only.active]


def filtered_models(manager: ModelManager, task: str, language: str, openness: str,
                    chosen: str | None, *, texts: Texts, optional: bool = False) -> dict:
    """The picker after the filter changed: the chosen model stays if it matches, else
    the first that does (an `optional` picker left empty stays empty)."""
    choices = model_choices(manager, texts=texts, only=tag_filter(task, language, openness))
    ids = [model_id for _, model_id in choices]
    if chosen in ids or (optional and not chosen):
        return gr.update(choices=choices, value=chosen)
    return gr.update(choices=choices, value=ids[0] if ids else None)


def filter_pickers(filters: FilterControls, pickers: Sequence[gr.Dropdown],
                   manager: ModelManager, *, texts: Texts, optional_from: int | None = None
                   ) -> None:
    """Narrow model pickers (Chat's, Compare's panes, Evaluate's candidates) to what the
    filter lets through, when it changes and again when a picker is opened (a tab switch
    or a registry change reads the whole list back into it). Pickers from `optional_from`
    on may stay empty."""
    for index, picker in enumerate(pickers):
        optional = optional_from is not None and index >= optional_from

        def narrow(task: str, language: str, openness: str, chosen: str | None,
                   optional: bool = optional) -> dict:
            return filtered_models(manager, task, language, openness, chosen, texts=texts,
                                   optional=optional)
        for event in (*(control.change for control in filters.components), picker.focus):
            event(narrow, [*filters.components, picker], [picker], api_name=False,
                  queue=False)


def _choice_label(manager: ModelManager, status: ModelStatus, texts: Texts) -> str:
    label = status.name
    entry = manager.registry.get(status.id)
    if entry is not None:
        label = entry.display_name
        if entry.trust_remote_code:
            label += " ⚠ " + texts("chat.choice.remote_code")
        if entry.chat_template == "none":
            label += " · " + texts("chat.choice.completion")
        if manager.template_warnings(status.id):
            label += " ⚠ " + texts("chat.choice.template")
    return label if status.usable else texts("chat.choice.unusable", label=label,
                                             state=texts(state_key(status.state)))


def model_info(manager: ModelManager, model_id: str | None,
               library: ModelLibrary | None = None, *, texts: Texts) -> str:
    if not model_id:
        return texts("chat.info.choose")
    try:
        entry = manager.entry(model_id)
    except (UnknownModel, ModelUnavailable) as exc:
        return texts("chat.error", detail=str(exc))
    status = manager.status(model_id)
    # The context length is shown as models.yaml writes it (no grouping), as before.
    lines = [texts("chat.info.header", name=entry.name, settings=texts.say(entry.settings_label),
                   context=str(entry.context_length), state=texts(state_key(status.state)))]
    if placement := manager.placement(model_id):
        lines.append(texts("chat.info.loaded_on", placement=placement))
    if entry.trust_remote_code:
        lines.append(texts("chat.info.remote_code"))
    if status.reason:
        lines.append(texts("chat.error", detail=texts.say(status.reason)))
    if library is not None and library.can_download(model_id):
        lines.append(texts("chat.info.download",
                           summary=remote_summary(library.remote_summary(model_id), texts)))
    lines += [texts("chat.error", detail=texts.say(warning))
              for warning in manager.template_warnings(model_id)]
    if entry.description:
        lines.append(entry.description)
    return "  \n".join(lines)


def select_model(manager: ModelManager, model_id: str,
                 library: ModelLibrary | None = None, *, texts: Texts) -> tuple:
    """The info panel and the entry's sampling defaults (every control's value), for a
    newly chosen model."""
    try:
        defaults = manager.entry(model_id).defaults
    except (UnknownModel, ModelUnavailable):
        return (model_info(manager, model_id, texts=texts),
                *(gr.update(),) * len(FIELDS))
    return (model_info(manager, model_id, library, texts=texts),
            *SettingsControls.shown(defaults))


def _download(library: ModelLibrary | None, model_id: str, request: gr.Request,
              texts: Texts) -> str:
    if library is None:
        return ""
    try:
        library.download_entry(model_id, user=getattr(request, "username", None) or None)
    except (LibraryError, UnknownModel, ModelUnavailable) as exc:
        return texts("chat.error", detail=str(exc))
    return texts("chat.downloading", model=model_id)


def build_chat_tab(app: gr.Blocks, manager: ModelManager, store: Store, initial_model: str,
                   exports: ExportFiles, library: ModelLibrary | None = None, *,
                   texts: Texts, costs: CostBook | None = None,
                   running: RunningReplies | None = None) -> gr.Dropdown:
    """Builds the tab in `texts`' language; returns its model picker, whose choices follow
    the registry. `running`: the app's running replies, which every page follows."""
    chat = ChatHandlers(manager, store, texts=texts, costs=costs, running=running)
    files = AttachmentControls(chat.attachments, texts=texts, tokens=chat.attachment_tokens)
    convs = ConversationHandlers(manager, store, chat, exports, texts=texts)
    answers = AnswerControls(chat, texts=texts)
    branches = BranchControls(chat, texts=texts, answers=answers)
    defaults = manager.entry(initial_model).defaults
    conversation_id = gr.State(None)
    editing = gr.State(None)  # the id of the question Send makes a new version of
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=220, elem_id="sidebar"):
            new_chat = gr.Button(texts("chat.new_chat"), variant="primary", elem_id="new-chat")
            search = gr.Textbox(placeholder=texts("chat.search"), show_label=False,
                                elem_id="search")
            conversations = gr.Radio(choices=[], label=texts("chat.conversations"),
                                     elem_id="conversations")
            with gr.Accordion(texts("chat.this_conversation"), open=False,
                              elem_id="conversation-actions") as actions:
                title = gr.Textbox(label=texts("chat.title"), elem_id="title")
                rename = gr.Button(texts("chat.rename"), size="sm", elem_id="rename")
                delete = gr.Button(texts("chat.delete"), size="sm", variant="stop",
                                   elem_id="delete")
                with gr.Row(visible=False, elem_id="confirm-delete") as confirm_row:
                    confirm = gr.Button(texts("chat.delete_confirm"), size="sm", variant="stop",
                                        elem_id="confirm-delete-yes")
                    keep = gr.Button(texts("chat.keep"), size="sm", elem_id="confirm-delete-no")
                with gr.Row():
                    export_md = gr.Button(texts("chat.export_md"), size="sm",
                                          elem_id="export-md")
                    export_json = gr.Button(texts("chat.export_json"), size="sm",
                                            elem_id="export-json")
                with_thoughts = gr.Checkbox(label=texts("chat.export_thoughts"), value=False,
                                            elem_id="export-thoughts")
                download = gr.File(label=texts("chat.download"), visible=False,
                                   interactive=False, elem_id="download")
                upload = gr.UploadButton(texts("chat.import_json"), file_types=[".json"],
                                         size="sm", elem_id="import")
            sidebar_status = gr.Markdown(elem_id="sidebar-status")
        with gr.Column(scale=4):
            with gr.Accordion(texts("tags.filter.title"), open=False, elem_id="chat-filter"):
                with gr.Row():
                    filters = FilterControls(texts, "chat-filter")
            with gr.Row():
                model = gr.Dropdown(choices=model_choices(manager, texts=texts),
                                    value=initial_model, label=texts("chat.model"), scale=2,
                                    interactive=True, elem_id="model")
                with gr.Column(scale=3):
                    info = gr.Markdown(model_info(manager, initial_model, library, texts=texts),
                                       elem_id="model-info")
                    fetch = gr.Button(texts("chat.download_model"), size="sm",
                                      elem_id="model-download",
                                      visible=bool(library and library.can_download(initial_model)))
            chatbot = gr.Chatbot(label=texts("chat.chat"), height=520, elem_id="chatbot",
                                 sanitize_html=True, render_markdown=True, buttons=["copy"],
                                 feedback_options=None, allow_tags=False,
                                 editable="user")  # an edited question: a new version
            # "‹ 2/3 ›" for each shown message with versions (chatui/branch_controls.py).
            versions = gr.HTML("", js_on_load=FLIP_JS, css_template=BRANCH_CSS,
                               elem_id="branches", label=texts("branches.title"))
            with gr.Row():
                message = gr.Textbox(placeholder=texts("chat.message"),
                                     show_label=False, scale=8, lines=1, max_lines=8,
                                     max_length=MAX_MESSAGE_CHARS, elem_id="message",
                                     autofocus=True)
                send = gr.Button(texts("chat.send"), variant="primary", scale=1,
                                 elem_id="send")
                stop = gr.Button(texts("chat.stop"), variant="stop", scale=1, elem_id="stop")
            with gr.Row(equal_height=True):
                attach = gr.UploadButton(texts("chat.attach"), file_count="multiple", size="sm",
                                         scale=0, elem_id="attach")
                chips = gr.Markdown(elem_id="attachments")
                clear_attached = gr.Button(texts("chat.attach_clear"), size="sm", scale=0,
                                           elem_id="attachments-clear")
            pending = gr.State([])
            meter = gr.Markdown(elem_id="context-meter")
            with gr.Row():
                regenerate = gr.Button(texts("chat.regenerate"), size="sm",
                                       elem_id="regenerate")
                edit = gr.Button(texts("chat.edit"), size="sm", elem_id="edit")
                continue_ = gr.Button(texts("chat.continue"), size="sm", elem_id="continue")
            with gr.Row():  # chatui/answer_controls.py
                answer_model = gr.Dropdown(choices=model_choices(manager, texts=texts),
                                           value=None, label=texts("answer.model"), scale=3,
                                           interactive=True, elem_id="answer-model")
                answer_target = gr.Dropdown(choices=[], value=None, label=texts("answer.which"),
                                            scale=1, interactive=True, elem_id="answer-target")
                with gr.Column(scale=1, min_width=120):
                    answer = gr.Button(texts("answer.button"), size="sm",
                                       elem_id="answer-with", variant="secondary")
                    answer_blind = gr.Checkbox(label=texts("answer.blind"), value=False,
                                               elem_id="answer-blind")
            with gr.Accordion(texts("chat.inspector.title"), open=False, elem_id="inspector"):
                inspector_prompt = gr.Code(label=texts("chat.inspector.prompt"),
                                           interactive=False, elem_id="inspector-prompt",
                                           wrap_lines=True)
                inspector_details = gr.Markdown(elem_id="inspector-details")
            with gr.Accordion(texts("chat.earlier"), open=False):
                earlier = gr.Markdown(elem_id="earlier")
            with gr.Accordion(texts("chat.parameters"), open=False):
                with gr.Row():
                    preset = gr.Dropdown(choices=list(builtin_presets(texts)), value=None,
                                         label=texts("chat.preset"), elem_id="preset")
                    preset_name = gr.Textbox(label=texts("chat.preset_name"), scale=1,
                                             elem_id="preset-name")
                    save_preset = gr.Button(texts("chat.save_preset"), size="sm",
                                            elem_id="save-preset")
                system = gr.Textbox(label=texts("chat.system"), lines=2, elem_id="system",
                                    placeholder=texts("chat.system_placeholder"))
                controls = SettingsControls(defaults, texts=texts)

    reply_outputs = [chatbot, message, conversation_id, editing]
    send_fn, sending = with_settings(chat.send, [message, conversation_id, editing, model,
                                                 system], controls, [pending])
    again_fn, again = with_settings(chat.regenerate, [conversation_id, model, system], controls)
    on_fn, on = with_settings(chat.continue_reply, [conversation_id, model, system], controls)
    other_fn, other = with_settings(answers.answer, [conversation_id, answer_model, system],
                                    controls, [answer_target])
    shown_rows = [versions, answer_target]  # the "‹ 2/3 ›" rows, the replies to answer again

    def edited(request: gr.Request, edit: gr.EditData, history: list, cid: int | None,
               model_id: str, system_prompt: str, *values: object):
        """A question edited in the chat (Gradio hands the edit only to a typed argument)."""
        yield from chat.edit_message(history, cid, model_id, system_prompt,
                                     controls.read(values), edit, request=request)

    replies = [
        message.submit(send_fn, sending, reply_outputs, api_name="send"),
        send.click(send_fn, sending, reply_outputs, api_name=False),
        regenerate.click(again_fn, again, reply_outputs, api_name="regenerate"),
        continue_.click(on_fn, on, reply_outputs, api_name="continue"),
        answer.click(other_fn, other, reply_outputs, api_name="answer_with"),
        chatbot.edit(edited, [chatbot, conversation_id, model, system, *controls.components],
                     reply_outputs, api_name=False),
    ]
    open_outputs = [chatbot, conversation_id, editing, title, model, system,
                    *controls.components, earlier]
    max_new_tokens = controls.components[FIELDS.index("max_new_tokens")]
    meter_inputs = [message, conversation_id, model, system, max_new_tokens, pending]
    for sent in replies[:2]:  # the attachments went with the message
        sent.then(lambda: ([], ""), None, [pending, chips], api_name=False, queue=False)
    attach.upload(files.attach, [attach, pending, model], [pending, chips], api_name=False,
                  **READING) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    message.input(files.paste, [message, pending, model], [message, pending, chips],
                  api_name=False, queue=False, trigger_mode="always_last")
    clear_attached.click(lambda: ([], ""), None, [pending, chips], api_name=False,
                         queue=False)
    for reply in replies:  # then: the list (a new title), earlier versions, the model panel
        reply.then(convs.after_reply, [search, conversation_id], [conversations, title, earlier],
                   api_name=False, queue=False) \
             .then(branches.rows, [conversation_id], shown_rows, api_name=False, queue=False) \
             .then(lambda m, *f: (model_info(manager, m, library, texts=texts),
                                  gr.update(choices=model_choices(
                                      manager, texts=texts, only=tag_filter(*f)))),
                   [model, *filters.components], [info, model], api_name=False,
                   queue=False) \
             .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
                   api_name=False, queue=False) \
             .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
                   show_progress="hidden")
    # The meter follows the draft as it is typed; only the latest keystroke is counted.
    message.change(chat.meter, meter_inputs, [meter], api_name=False, show_progress="hidden",
                   trigger_mode="always_last")
    edit.click(chat.edit_last, [conversation_id], [message, editing], api_name=False,
               queue=False)
    # Stop ends the reply running in the conversation shown, whichever tab started it.
    stop.click(chat.stop, [conversation_id], None, api_name="stop", queue=False)
    # A new chat ends the running reply too, so its last update cannot bring the old one back.
    new_outputs = [chatbot, conversation_id, editing, message, conversations, title, earlier]
    new_chat.click(convs.new_chat, None, new_outputs, api_name="new_chat", queue=False,
                   cancels=replies) \
        .then(lambda: ("", gr.update(choices=[], value=None)), None, shown_rows,
              api_name=False, queue=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    # The chat's trash deletes the conversation, after asking as the sidebar's delete does;
    # until then the chat stays shown.
    chatbot.clear(convs.ask_clear, [conversation_id],
                  [chatbot, confirm_row, sidebar_status, actions], api_name=False, queue=False)
    opened = conversations.input(convs.open, [conversations], open_outputs, api_name="open",
                                 queue=False)
    opened.then(branches.rows, [conversation_id], shown_rows, api_name=False, queue=False) \
        .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
              api_name=False, queue=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    # A reply still running in the opened conversation (started before a reload, or in
    # another tab) is followed to its end; opening another conversation, or a new chat,
    # stops following it (it runs on) and any reply this tab shows.
    following = opened.then(chat.attach, [conversation_id], reply_outputs, api_name=False,
                            show_progress="hidden")
    following.then(convs.after_reply, [search, conversation_id],
                   [conversations, title, earlier], api_name=False, queue=False) \
        .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
              api_name=False, queue=False)
    for leaving in (conversations.input, new_chat.click):
        leaving(None, None, None, cancels=[following, *replies], api_name=False,
                queue=False)
    search.change(convs.refresh, [search, conversation_id], [conversations], api_name=False,
                  queue=False)
    rename.click(convs.rename, [conversation_id, title, search], [conversations, sidebar_status],
                 api_name="rename", queue=False)
    delete.click(convs.ask_delete, [conversation_id], [confirm_row, sidebar_status],
                 api_name=False, queue=False)
    confirm.click(convs.confirm_delete, [conversation_id, search],
                  [confirm_row, sidebar_status, conversations, chatbot, conversation_id, title],
                  api_name="delete", queue=False) \
        .then(branches.rows, [conversation_id], shown_rows, api_name=False, queue=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    keep.click(convs.cancel_delete, None, [confirm_row, sidebar_status], api_name=False,
               queue=False)
    export_md.click(convs.export_markdown, [conversation_id, with_thoughts],
                    [download, sidebar_status], api_name=False)
    export_json.click(convs.export_json, [conversation_id, with_thoughts],
                      [download, sidebar_status], api_name=False)
    upload.upload(convs.import_file, [upload, search], [conversations, sidebar_status],
                  api_name=False) \
        .then(convs.open, [conversations], open_outputs, api_name=False, queue=False) \
        .then(branches.rows, [conversation_id], shown_rows, api_name=False, queue=False)
    # A flip shows the version asked for; the Inspector and the meter follow the branch.
    versions.click(branches.flip, [conversation_id], [chatbot, *shown_rows], api_name=False,
                   queue=False) \
        .then(convs.after_reply, [search, conversation_id], [conversations, title, earlier],
              api_name=False, queue=False) \
        .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
              api_name=False, queue=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden")
    preset.input(convs.apply_preset, [preset], [system], api_name=False, queue=False)
    save_preset.click(convs.save_preset, [preset_name, system], [preset, sidebar_status],
                      api_name=False, queue=False)
    # A new model: its defaults, then the meter and the chips in its tokenizer.
    model.change(lambda m: select_model(manager, m, library, texts=texts), [model],
                 [info, *controls.components], api_name=False) \
        .then(chat.meter, meter_inputs, [meter], api_name=False, queue=False,
              show_progress="hidden") \
        .then(files.chips, [pending, model], [chips], api_name=False, queue=False)
    model.change(lambda m: gr.update(visible=bool(library and library.can_download(m))),
                 [model], [fetch], api_name=False, queue=False)

    def fetch_model(model_id: str, request: gr.Request) -> str:
        return _download(library, model_id, request, texts=texts)  # typed: Gradio passes it

    fetch.click(fetch_model, [model], [info], api_name=False)
    # "Answer with…"'s picker too: it may stay empty, and reads the registry when opened.
    filter_pickers(filters, [model, answer_model], manager, texts=texts, optional_from=1)
    app.load(convs.on_page_load, None, [conversations, preset], api_name=False)
    app.load(answers.blind_now, None, [answer_blind], api_name=False, queue=False)
    # Blind mode hides the models of a question's replies from two models until you judge.
    answer_blind.input(answers.set_blind, [answer_blind, conversation_id], [chatbot],
                       api_name=False, queue=False) \
        .then(branches.rows, [conversation_id], shown_rows, api_name=False, queue=False) \
        .then(chat.inspect, [conversation_id], [inspector_prompt, inspector_details],
              api_name=False, queue=False)
    gr.api(convs.api_list, api_name="conversations")
    gr.api(convs.api_get, api_name="conversation")
    return model
