"""The Compare tab: two to four panes answering the same prompts side by side."""
from __future__ import annotations


import gradio as gr

from chatcore.costs.book import CostBook
from chatcore.compare.comparison import LABELS, MAX_PANES, MIN_PANES, Comparison
from chatcore.i18n import Texts
from chatcore.generation.manager import ModelManager
from chatcore.conversations.store import Store
from chatui.attachment_controls import READING, AttachmentControls
from chatui.chat_tab import filter_pickers, model_choices
from chatui.model_filters import FilterControls
from chatui.compare_handlers import LEADERBOARD_COLUMNS, CompareHandlers
from chatui.exports import ExportFiles
from chatui.sampling_controls import SettingsControls, defaults_of, with_settings


def build_compare_tab(app: gr.Blocks, manager: ModelManager, store: Store, initial_model: str,
                      exports: ExportFiles, *, texts: Texts,
                      costs: CostBook | None = None,
                      tab: gr.Tab | None = None) -> list[gr.Dropdown]:
    """Builds the tab; returns the panes' model pickers, whose choices follow the registry.
    `tab`: the tab it is built in; showing it brings the leaderboard up to date."""
    compare = CompareHandlers(manager, store, exports, texts=texts, costs=costs)
    choices = model_choices(manager, texts=texts)
    # Distinct usable models in the panes to begin with, the chat's model first.
    usable = [initial_model] + [model_id for _, model_id in choices
                                if model_id != initial_model and manager.status(model_id).usable]
    comparison = gr.State(None)
    with gr.Row():
        count = gr.Radio([str(n) for n in range(MIN_PANES, MAX_PANES + 1)], value="2",
                         label=texts("compare.panes"), elem_id="compare-count", scale=1)
        blind = gr.Checkbox(label=texts("compare.blind"), value=False,
                            elem_id="compare-blind", scale=2)
        new_round = gr.Button(texts("compare.new"), size="sm", elem_id="compare-new", scale=1)
    system = gr.Textbox(label=texts("compare.system"), lines=1, elem_id="compare-system",
                        placeholder=texts("compare.system_placeholder"))
    with gr.Accordion(texts("tags.filter.title"), open=False, elem_id="compare-filter"):
        with gr.Row():
            filters = FilterControls(texts, "compare-filter")
    columns, pickers, controls, panes = [], [], [], []
    with gr.Row(equal_height=False):
        for index in range(MAX_PANES):
            with gr.Column(visible=index < MIN_PANES, min_width=240) as column:
                pickers.append(gr.Dropdown(
                    choices=choices, value=usable[index % len(usable)],
                    label=Comparison.label(index, texts=texts),
                    elem_id=f"compare-model-{index}"))
                with gr.Accordion(texts("compare.settings"), open=False,
                                  elem_id=f"compare-settings-{index}"):
                    # Each pane starts from its model's own defaults.
                    controls.append(SettingsControls(
                        defaults_of(manager, pickers[-1].value), texts=texts,
                        elem_id=lambda name, i=index: f"compare-{name.replace('_', '-')}-{i}"))
                panes.append(gr.Chatbot(label=Comparison.label(index, texts=texts), height=420,
                                        elem_id=f"compare-pane-{index}", sanitize_html=True,
                                        buttons=["copy"], feedback_options=None,
                                        allow_tags=False))
            columns.append(column)
    with gr.Row():
        message = gr.Textbox(placeholder=texts("compare.message_placeholder"),
                             show_label=False, scale=8, elem_id="compare-message")
        send = gr.Button(texts("compare.send"), variant="primary", scale=1, elem_id="compare-send")
        stop = gr.Button(texts("compare.stop"), variant="stop", scale=1, elem_id="compare-stop")
    with gr.Row(visible=False, elem_id="compare-vote") as vote_row:
        vote_buttons = [gr.Button(texts("compare.better", label=label), size="sm",
                                  elem_id=f"compare-vote-{label.lower()}",
                                  visible=i < MIN_PANES)
                        for i, label in enumerate(LABELS)]
        tie = gr.Button(texts("compare.tie"), size="sm", elem_id="compare-vote-tie")
        bad = gr.Button(texts("compare.all_bad"), size="sm", elem_id="compare-vote-bad")
    with gr.Row(equal_height=True):
        attach = gr.UploadButton(texts("compare.attach"), file_count="multiple",
                                 size="sm", scale=0, elem_id="compare-attach")
        chips = gr.Markdown(elem_id="compare-attachments")
    pending = gr.State([])
    status = gr.Markdown(elem_id="compare-status")
    with gr.Accordion(texts("compare.inspector"), open=False,
                      elem_id="compare-inspector-box"):
        inspector = gr.Markdown(texts("compare.inspector_empty"),
                                elem_id="compare-inspector")
    with gr.Row():
        save = gr.Button(texts("compare.save"), size="sm", elem_id="compare-save")
        export_md = gr.Button(texts("compare.export_md"), size="sm", elem_id="compare-export-md")
    with gr.Accordion(texts("compare.leaderboard"), open=True, elem_id="compare-leaderboard-box"):
        gr.Markdown(texts("compare.leaderboard_note"))
        with gr.Row(equal_height=True):  # open votes: Compare's shown, the chat's preferences
            include_open = gr.Checkbox(value=True, label=texts("answer.include_open"),
                                       scale=1, elem_id="compare-include-open")
            vote_counts = gr.Markdown(elem_id="compare-vote-counts")
        board = gr.Dataframe(headers=[*texts.labels("compare.column", LEADERBOARD_COLUMNS), texts("costs.column")], value=[], interactive=False,
                             elem_id="compare-leaderboard")
        with gr.Row():
            export_csv = gr.Button(texts("compare.export_csv"), size="sm", elem_id="votes-csv")
            export_json = gr.Button(texts("compare.export_json"), size="sm", elem_id="votes-json")
    download = gr.File(label=texts("compare.download"), visible=False, interactive=False,
                       elem_id="compare-download")

    round_outputs = [*panes, comparison, message, vote_row, *pickers, inspector]

    def send_round(*values, request: gr.Request):
        message, state, blind, count, system = values[:5]
        models, (settings, attached) = values[5:5 + MAX_PANES], values[5 + MAX_PANES:]
        yield from compare.send(message, state, blind, count, system, models, settings,
                                attached, request=request)

    send_fn, round_inputs = with_settings(
        send_round, [message, comparison, blind, count, system, *pickers], controls, [pending])
    for picker, group in zip(pickers, controls):  # a pane's new model: its defaults
        picker.change(lambda m: SettingsControls.shown(defaults_of(manager, m)), [picker],
                      group.components, api_name=False, queue=False)
    rounds = [
        message.submit(send_fn, round_inputs, round_outputs, api_name="compare"),
        send.click(send_fn, round_inputs, round_outputs, api_name=False),
    ]
    for sent in rounds:  # the attachments went with the prompt, to every pane
        sent.then(lambda: ([], ""), None, [pending, chips], api_name=False, queue=False)
    attach.upload(AttachmentControls(compare.attachments, texts=texts).attach, [attach, pending],
                  [pending, chips], api_name=False, **READING)
    stop.click(compare.stop, None, None, api_name="compare_stop", queue=False)
    new_round.click(compare.new_round, None, [*round_outputs, status],
                    api_name="compare_new", queue=False, cancels=rounds)

    def layout(n: str, request: gr.Request) -> tuple:
        """Pane count or blind mode changed: show that many panes and start afresh."""
        shown = int(n)
        return (*[gr.update(visible=i < shown) for i in range(MAX_PANES)],
                *[gr.update(visible=i < shown) for i in range(MAX_PANES)],
                *compare.new_round(request))

    layout_outputs = [*columns, *vote_buttons, *round_outputs, status]
    count.change(layout, [count], layout_outputs, api_name=False, queue=False, cancels=rounds)
    blind.change(layout, [count], layout_outputs, api_name=False, queue=False, cancels=rounds)

    def voter(outcome: str):
        def cast(state, include: bool, request: gr.Request):
            return compare.vote(outcome, state, request, include)
        return cast

    vote_outputs = [*round_outputs, status, board]
    board_outputs = [board, vote_counts]
    votes_cast = [button.click(voter(label), [comparison, include_open], vote_outputs,
                               api_name=f"vote_{label.lower()}", queue=False)
                  for label, button in zip(LABELS, vote_buttons)]
    votes_cast.append(tie.click(voter("tie"), [comparison, include_open], vote_outputs,
                                api_name="vote_tie", queue=False))
    votes_cast.append(bad.click(voter("bad"), [comparison, include_open], vote_outputs,
                                api_name="vote_bad", queue=False))
    for cast in votes_cast:  # and its counts
        cast.then(compare.board, [include_open], board_outputs, api_name=False, queue=False)
    include_open.change(compare.board, [include_open], board_outputs, api_name=False,
                        queue=False)
    if tab is not None:  # votes cast in the chat since: the board counts them when shown
        tab.select(compare.board, [include_open], board_outputs, api_name=False, queue=False)
    save.click(compare.save_conversations, [comparison], [status], api_name="compare_save",
               queue=False)
    export_md.click(compare.export_markdown, [comparison], [download, status], api_name=False)

    def exporter(kind: str):
        def export(request: gr.Request):
            return compare.export_votes(kind, request)
        return export

    export_csv.click(exporter("csv"), None, [download, status], api_name=False)
    export_json.click(exporter("json"), None, [download, status], api_name=False)
    app.load(compare.board, [include_open], board_outputs, api_name=False)
    filter_pickers(filters, pickers, manager, texts=texts)
    gr.api(compare.api_leaderboard, api_name="leaderboard")
    return pickers
