"""The Evaluate tab: a prompt set run over 2-4 models unattended, a blind review queue,
ratings per category with style control, a judge, and the report."""
from __future__ import annotations

import gradio as gr

from chatcore.evaluate.runner import MAX_CANDIDATES, MIN_CANDIDATES
from chatcore.i18n import Texts
from chatcore.evaluate.rubric import RUBRIC
from chatcore.generation.manager import ModelManager
from chatcore.evaluate.prompt_sets import MAX_IMPORT_BYTES
from chatui.chat_handlers import user_of
from chatui.chat_tab import filter_pickers, model_choices
from chatui.model_filters import FilterControls
from chatui.evaluate_handlers import (
    CHOICE_COLUMNS,
    RATING_COLUMNS,
    VOTES,
    EvaluateHandlers,
)
from chatui.prompt_set_handlers import SET_COLUMNS
from chatui.sampling_controls import SettingsControls, defaults_of, with_settings

PROGRESS_TICK_S = 1.0

# Keys for the review queue: 1/a = A better, 2/b = B better, 3/t = tie, 4/x = both bad;
# ignored while typing in a text field. Given to the page's <head>.
REVIEW_KEYS_JS = """
<script>
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
  const ids = {'1': 'review-a', 'a': 'review-a', '2': 'review-b', 'b': 'review-b',
               '3': 'review-tie', 't': 'review-tie', '4': 'review-bad', 'x': 'review-bad'};
  const id = ids[event.key.toLowerCase()];
  const button = id && document.getElementById(id);
  if (button && button.offsetParent !== null && !button.disabled) {
    event.preventDefault();
    button.click();
  }
});
</script>
"""


def build_evaluate_tab(app: gr.Blocks, manager: ModelManager, handlers: EvaluateHandlers,
                       initial_model: str, *, texts: Texts) -> tuple:
    """Builds the tab in `texts`' language (the handlers speak the same one); returns its
    model pickers (their choices follow the registry), the progress timer (ticking only while
    the tab is shown), and the refresh of its set and run lists with their outputs (for when
    the tab is shown again)."""
    choices = model_choices(manager, texts=texts)
    usable = [initial_model] + [m for _, m in choices
                                if m != initial_model and manager.status(m).usable]
    item = gr.State(None)
    followed = gr.State(None)  # the run the status line reports on, until it stops running

    gr.Markdown(texts("evaluate.intro"))
    with gr.Accordion(texts("evaluate.sets.box"), open=True, elem_id="eval-set-box"):
        with gr.Row():
            set_picker = gr.Dropdown(choices=[], label=texts("evaluate.sets.picker"), scale=3,
                                     elem_id="eval-set")
            new_set = gr.Button(texts("evaluate.sets.new"), size="sm", scale=0,
                                elem_id="eval-set-new")
            duplicate = gr.Button(texts("evaluate.sets.duplicate"), size="sm", scale=0,
                                  elem_id="eval-set-duplicate")
            delete = gr.Button(texts("evaluate.sets.delete"), size="sm", variant="stop",
                               scale=0, elem_id="eval-set-delete")
        set_name = gr.Textbox(label=texts("evaluate.sets.name"), max_length=80,
                              elem_id="eval-set-name")
        rows = gr.Dataframe(headers=texts.labels("evaluate.set_column", SET_COLUMNS), value=[["", "", ""]],
                            col_count=3, row_count=1, interactive=True, wrap=True,
                            label=texts("evaluate.sets.rows"), elem_id="eval-set-rows")
        with gr.Row(equal_height=True):
            new_prompt = gr.Textbox(label=texts("evaluate.sets.new_prompt"), lines=1,
                                    max_length=8000, scale=4, elem_id="eval-new-prompt")
            new_category = gr.Textbox(label=texts("evaluate.sets.category"), max_length=40,
                                      scale=1, elem_id="eval-new-category")
            new_reference = gr.Textbox(label=texts("evaluate.sets.reference"), max_length=8000,
                                       scale=2, elem_id="eval-new-reference")
            add = gr.Button(texts("evaluate.sets.add"), size="sm", scale=0,
                            elem_id="eval-add-prompt")
        with gr.Row():
            save = gr.Button(texts("evaluate.sets.save"), variant="primary", size="sm",
                             elem_id="eval-set-save")
            export_jsonl = gr.Button(texts("evaluate.sets.export_jsonl"), size="sm",
                                     elem_id="eval-set-jsonl")
            export_csv = gr.Button(texts("evaluate.sets.export_csv"), size="sm",
                                   elem_id="eval-set-csv")
            # The size as a plain number (not grouped: "1000 kB", as it has always read).
            upload = gr.UploadButton(texts("evaluate.sets.import",
                                           kb=str(MAX_IMPORT_BYTES // 1000)),
                                     file_types=[".jsonl", ".csv"], size="sm",
                                     elem_id="eval-set-import")
        set_status = gr.Markdown(elem_id="eval-set-status")

    with gr.Accordion(texts("evaluate.run.box"), open=True, elem_id="eval-run-box"):
        with gr.Accordion(texts("tags.filter.title"), open=False, elem_id="eval-filter"):
            with gr.Row():
                filters = FilterControls(texts, "eval-filter")
        pickers, controls = [], []
        with gr.Row(equal_height=False):
            for index in range(MAX_CANDIDATES):
                with gr.Column(min_width=200):
                    pickers.append(gr.Dropdown(
                        choices=choices,
                        value=usable[index] if index < min(MIN_CANDIDATES, len(usable)) else None,
                        label=texts("evaluate.run.model" if index < MIN_CANDIDATES
                                    else "evaluate.run.model_optional", n=index + 1),
                        elem_id=f"eval-model-{index}"))
                    with gr.Accordion(texts("evaluate.run.settings"), open=False,
                                      elem_id=f"eval-settings-{index}"):
                        controls.append(SettingsControls(
                            defaults_of(manager, pickers[-1].value), texts=texts,
                            elem_id=lambda name, i=index:
                            f"eval-{name.replace('_', '-')}-{i}"))
        system = gr.Textbox(label=texts("evaluate.run.system"), lines=1, max_length=4000,
                            placeholder=texts("evaluate.run.system_placeholder"),
                            elem_id="eval-system")
        start = gr.Button(texts("evaluate.run.start"), variant="primary", elem_id="eval-start")
        with gr.Row():
            run_picker = gr.Dropdown(choices=[], label=texts("evaluate.run.picker"), scale=3,
                                     elem_id="eval-run")
            pause = gr.Button(texts("evaluate.run.pause"), size="sm", scale=0,
                              elem_id="eval-pause")
            resume = gr.Button(texts("evaluate.run.resume"), size="sm", scale=0,
                               elem_id="eval-resume")
            cancel = gr.Button(texts("evaluate.run.cancel"), size="sm", variant="stop",
                               scale=0, elem_id="eval-cancel")
        progress = gr.HTML(texts("evaluate.no_run"), elem_id="eval-progress")
        run_status = gr.Markdown(elem_id="eval-run-status")

    with gr.Accordion(texts("evaluate.review.box"), open=True, elem_id="eval-review-box"):
        gr.Markdown(texts("evaluate.review.help"))
        review_header = gr.Markdown(texts("evaluate.no_run"), elem_id="review-header")
        # Line breaks kept as the chat keeps them (a haiku, a list one item a line);
        # sanitized, so markup in a prompt or reply stays text.
        review_prompt = gr.Markdown(elem_id="review-prompt", sanitize_html=True,
                                    line_breaks=True)
        review_reference = gr.Markdown(elem_id="review-reference", sanitize_html=True,
                                       line_breaks=True)
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("**A**")
                reply_a = gr.Markdown(elem_id="review-reply-a", sanitize_html=True,
                                      line_breaks=True)
            with gr.Column():
                gr.Markdown("**B**")
                reply_b = gr.Markdown(elem_id="review-reply-b", sanitize_html=True,
                                      line_breaks=True)
        with gr.Row():
            # elem_ids review-a, -b, -tie, -bad: the keys in REVIEW_KEYS_JS click them.
            vote_buttons = {vote: gr.Button(texts(f"evaluate.review.button.{vote}"),
                                            elem_id=f"review-{vote.lower()}")
                            for vote in VOTES}
        revealed = gr.Markdown(elem_id="review-revealed")

    with gr.Accordion(texts("evaluate.ratings.box"), open=True, elem_id="eval-ratings-box"):
        gr.Markdown(texts("evaluate.ratings.help"))
        choose = gr.Dataframe(headers=texts.labels("evaluate.choice_column", CHOICE_COLUMNS), value=[],
                              interactive=False, label=texts("evaluate.ratings.choose"),
                              elem_id="eval-choose")
        ratings = gr.Dataframe(headers=texts.labels("evaluate.rating_column", RATING_COLUMNS), value=[],
                               interactive=False, label=texts("evaluate.ratings.table"),
                               elem_id="eval-ratings")
        style_note = gr.Markdown(elem_id="eval-style-note")
        with gr.Row():
            draw = gr.Button(texts("evaluate.ratings.plot_button"), size="sm",
                             elem_id="eval-plot-button")
            report = gr.Button(texts("evaluate.ratings.report_button"), size="sm",
                               elem_id="eval-report")
        with gr.Row():
            plot = gr.Image(label=texts("evaluate.ratings.plot"), type="filepath",
                            interactive=False, elem_id="eval-plot")
            cost_plot = gr.Image(label=texts("costs.plot"), type="filepath",
                                 interactive=False, elem_id="eval-cost-plot")
        with gr.Accordion(texts("evaluate.judge.box"), open=False, elem_id="eval-judge-box"):
            gr.Markdown(texts("evaluate.judge.help"))
            # The rubric as the judge model reads it: a prompt, so English on every page.
            gr.Code(RUBRIC, language=None, interactive=False,
                    label=texts("evaluate.judge.rubric"))
            with gr.Row():
                judge = gr.Dropdown(choices=choices, value=None,
                                    label=texts("evaluate.judge.model"), scale=3,
                                    elem_id="eval-judge")
                judge_start = gr.Button(texts("evaluate.judge.start"), size="sm", scale=0,
                                        elem_id="eval-judge-start")
            judge_status = gr.Markdown(elem_id="eval-judge-status")
        report_status = gr.Markdown(elem_id="eval-report-status")
        download = gr.File(label=texts("evaluate.ratings.download"), visible=False,
                           interactive=False, file_count="multiple", elem_id="eval-download")

    # -- prompt sets -----------------------------------------------------------------------
    sets = handlers.sets
    # Any new choice shows its set; only a person's own pick replaces the status line, so
    # "Saved", "Duplicated" and "Imported" stay after their handler picks the set.
    set_picker.change(sets.open_set, [set_picker], [set_name, rows], api_name=False,
                      queue=False)
    set_picker.input(sets.set_note, [set_picker], [set_status], api_name=False, queue=False)
    new_set.click(sets.new_set, None, [set_name, rows, set_status], api_name=False,
                  queue=False)
    adding = [rows, new_prompt, new_category, new_reference]
    add.click(sets.add_prompt, adding, [*adding, set_status], api_name=False, queue=False)
    new_prompt.submit(sets.add_prompt, adding, [*adding, set_status], api_name=False,
                      queue=False)
    save.click(sets.save_set, [set_picker, set_name, rows], [set_picker, set_status],
               api_name=False)
    duplicate.click(sets.duplicate_set, [set_picker], [set_picker, set_status],
                    api_name=False)
    delete.click(sets.delete_set, [set_picker], [set_picker, set_status], api_name=False)
    upload.upload(sets.import_set, [upload], [set_picker, set_status], api_name=False)

    def exporter(kind: str):
        def export(choice: str | None, request: gr.Request):
            return sets.export_set(choice, kind, request)
        return export

    export_jsonl.click(exporter("jsonl"), [set_picker], [download, set_status], api_name=False)
    export_csv.click(exporter("csv"), [set_picker], [download, set_status], api_name=False)

    # -- runs ------------------------------------------------------------------------------
    review_outputs = [review_header, review_prompt, review_reference, reply_a, reply_b, item]
    rating_outputs = [ratings, choose, style_note]

    def start_run(choice: str | None, system_prompt: str, *values, request: gr.Request):
        models, settings = values[:MAX_CANDIDATES], values[MAX_CANDIDATES]
        picker, status = handlers.start_run(choice, system_prompt, models, settings,
                                            request=request)
        return picker, status, picker.get("value")  # the run started, if one did

    start_fn, start_inputs = with_settings(start_run, [set_picker, system, *pickers], controls)
    start.click(start_fn, start_inputs, [run_picker, run_status, followed], api_name=False)
    for picker, group in zip(pickers, controls):  # a candidate's new model: its defaults
        picker.change(lambda m: SettingsControls.shown(defaults_of(manager, m)), [picker],
                      group.components, api_name=False, queue=False)

    def opened(run_id, request: gr.Request):
        return (handlers.progress_html(run_id, request), *handlers.next_pair(run_id, request),
                *handlers.ratings(run_id, request), handlers.judge_status(run_id, request), "")

    run_picker.change(opened, [run_picker],
                      [progress, *review_outputs, *rating_outputs, judge_status, revealed],
                      api_name=False)

    def controller(action: str):
        def control(run_id, request: gr.Request):
            return *handlers.control(action, run_id, request), run_id
        return control

    for action, button in (("pause", pause), ("resume", resume), ("cancel", cancel)):
        button.click(controller(action), [run_picker], [run_picker, run_status, followed],
                     api_name=False)

    def tick(run_id, shown_item, followed_run, request: gr.Request):
        """Progress, the first pair as soon as one is ready (a shown pair stays), and the
        status line once the run it reports on stopped running."""
        pair = handlers.next_pair(run_id, request) if shown_item is None \
            else (handlers.header(run_id, shown_item, request),
                  *(gr.update(),) * (len(review_outputs) - 1))
        return (handlers.progress_html(run_id, request), *pair,
                handlers.judge_status(run_id, request),
                *handlers.followed_status(followed_run, request))

    timer = gr.Timer(PROGRESS_TICK_S, active=False)
    timer.tick(tick, [run_picker, item, followed],
               [progress, *review_outputs, judge_status, run_status, followed],
               api_name=False, queue=False, show_progress="hidden")

    # -- review ----------------------------------------------------------------------------
    def voter(choice: str):
        def cast(shown, run_id, request: gr.Request):
            return (handlers.vote(choice, shown, run_id, request),
                    *handlers.next_pair(run_id, request), *handlers.ratings(run_id, request))
        return cast

    for choice, button in vote_buttons.items():
        button.click(voter(choice), [item, run_picker], [revealed, *review_outputs,
                                                         *rating_outputs], api_name=False)

    # -- ratings, judge, report ------------------------------------------------------------
    draw.click(handlers.plot, [run_picker], [plot], api_name=False).then(
        handlers.cost_plot, [run_picker], [cost_plot], api_name=False)
    judge_start.click(handlers.start_judge, [run_picker, judge], [judge_status], api_name=False)
    report.click(handlers.export_report, [run_picker], [download, report_status],
                 api_name=False)

    def first_view(request: gr.Request):
        user = user_of(request)
        return (gr.update(choices=sets.set_choices(user)),
                gr.update(choices=handlers.run_choices(user)))

    def landing(request: gr.Request):
        """The lists, and the newest run open (the Run picker's change shows its review)."""
        user = user_of(request)
        runs = handlers.run_choices(user)  # newest first
        return (gr.update(choices=sets.set_choices(user)),
                gr.update(choices=runs, value=runs[0][1] if runs else None))

    app.load(landing, None, [set_picker, run_picker], api_name=False)
    filter_pickers(filters, pickers, manager, texts=texts, optional_from=MIN_CANDIDATES)
    return [*pickers, judge], timer, first_view, [set_picker, run_picker]
