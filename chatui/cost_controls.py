"""What a token costs on the page: the Models tab's lines and settings, the note under a
finished reply, the leaderboard's cell (chatcore/costs computes; this says it)."""
from __future__ import annotations

import gradio as gr

from chatcore.conversations.store import StoredMessage
from chatcore.costs.book import CostBook, ModelCost
from chatcore.costs.settings import CostSettingError, parse_settings
from chatcore.costs.words import cost_line, money, reply_note
from chatcore.generation.manager import ModelManager
from chatcore.generation.replies import LiveReply
from backends.price import CURRENCIES
from chatcore.i18n import Texts


class CostWords:
    """One page's cost figures in its language, read fresh (settings and measured speeds
    live in the store, so every page and tab agrees)."""

    def __init__(self, manager: ModelManager, costs: CostBook, *, texts: Texts) -> None:
        self.manager, self.costs, self.texts = manager, costs, texts

    def cost(self, model_id: str) -> ModelCost | None:
        entry = self.manager.registry.get(model_id)
        if entry is None:
            return None
        return self.costs.cost(entry, self.costs.settings(self.texts.language))

    def lines(self) -> str:
        """Every model's line, for the Models tab."""
        settings = self.costs.settings(self.texts.language)
        texts = self.texts
        rows = [texts("costs.model_line", model=entry.display_name,
                      line=cost_line(self.costs.cost(entry, settings), texts))
                for entry in self.manager.registry.entries]
        if not settings.saved:
            rows.append(texts("costs.defaults", price=money(settings.price_per_kwh,
                                                             settings.currency, texts)))
        return "\n\n".join(rows)

    def cell(self, model_id: str) -> str:
        """The leaderboard's cell: cost per million output tokens, or "–"."""
        cost = self.cost(model_id)
        if cost is None or not cost.known:
            return "–"
        return money(cost.output_per_million or 0.0, cost.currency, self.texts)

    def reply(self, live: LiveReply) -> str:
        """"≈ ₱0.004 for this reply" under a finished reply, else ""."""
        usage = live.meter.usage
        if not live.done or live.error or usage is None:
            return ""
        cost = self.cost(live.model_id)
        return reply_note(cost, usage.prompt_tokens, usage.completion_tokens, self.texts) \
            if cost is not None else ""

    def stored(self, message: StoredMessage) -> str:
        """The same note under a reply read back from the store."""
        cost = self.cost(message.model or "")
        if cost is None or message.completion_tokens is None:
            return ""
        return reply_note(cost, message.prompt_tokens or 0, message.completion_tokens,
                          self.texts)

    def save(self, currency: str, price: object, watts: object, hardware_cost: object,
             hours: object) -> str:
        texts = self.texts
        try:
            settings = parse_settings(currency, price, watts, hardware_cost, hours)
        except CostSettingError as exc:
            return refusal(exc, texts)
        self.costs.save(settings)
        watts_words = texts("costs.watts_read") if settings.watts is None \
            else texts("costs.watts_set", watts=texts.number(settings.watts, 0))
        return texts("costs.saved", price=money(settings.price_per_kwh, settings.currency,
                                                texts), watts=watts_words)


def refusal(exc: CostSettingError, texts: Texts) -> str:
    """A refused setting in the page's words, naming the field and its unit."""
    field = texts(f"costs.field.{exc.field}")
    if exc.kind == "currency":
        return texts("costs.bad_currency", field=field, value=str(exc.value))
    if exc.kind == "number":
        return texts("costs.not_number", field=field, value=str(exc.value))
    return texts("costs.bad", field=field, value=str(exc.value), low=texts.number(exc.low),
                 high=texts.number(exc.high), unit=exc.unit)


def build_cost_panel(manager: ModelManager, costs: CostBook, timer: gr.Timer, *,
                     texts: Texts) -> CostWords:
    """The Models tab's "What a token costs": a line per model (refreshed with the table)
    and the settings, saved once for every page."""
    words = CostWords(manager, costs, texts=texts)
    settings = costs.settings(texts.language)
    with gr.Accordion(texts("costs.box"), open=True, elem_id="costs-box"):
        gr.Markdown(texts("costs.help"))
        lines = gr.Markdown(words.lines(), elem_id="costs-lines")
        with gr.Row():
            watts = gr.Textbox("" if settings.watts is None else f"{settings.watts:g}",
                               label=texts("costs.watts"), max_length=12, elem_id="costs-watts")
            price = gr.Number(settings.price_per_kwh, label=texts("costs.price"),
                              elem_id="costs-price")
            currency = gr.Dropdown(list(CURRENCIES), value=settings.currency,
                                   label=texts("costs.currency"), elem_id="costs-currency")
            hardware = gr.Number(settings.hardware_cost, label=texts("costs.hardware_cost"),
                                 elem_id="costs-hardware")
            hours = gr.Number(settings.hardware_hours, label=texts("costs.hardware_hours"),
                              elem_id="costs-hours")
        save = gr.Button(texts("costs.save"), size="sm", elem_id="costs-save")
        outcome = gr.Markdown(elem_id="costs-outcome")
    save.click(words.save, [currency, price, watts, hardware, hours], [outcome],
               api_name="cost_settings").then(words.lines, None, [lines], api_name=False)
    timer.tick(words.lines, None, [lines], api_name=False, queue=False,
               show_progress="hidden")
    return words
