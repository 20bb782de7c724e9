"""The chat page: pick a model, talk to it, see how fast it answered."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from backends.base import BackendError, Chunk, GenParams
from chatcore.config import GenerationDefaults
from chatcore.manager import (
    Loading,
    ModelManager,
    ModelStatus,
    ModelUnavailable,
    UnknownModel,
    Waiting,
)
from chatcore.meter import ReplyMeter
from chatui.transcript import Turn, chatbot_messages, prompt_messages

log = logging.getLogger(__name__)

# Re-rendering a long reply on every token is what makes browsers fall behind: send the
# page at most one update per interval (about 20 a second), whatever the token rate.
UPDATE_INTERVAL_S = 0.05


@dataclass
class ChatControls:
    """The components the chat handlers read and write."""

    model: gr.Dropdown
    model_info: gr.Markdown
    chatbot: gr.Chatbot
    message: gr.Textbox
    turns: gr.State
    system: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    max_new_tokens: gr.Slider
    repetition_penalty: gr.Slider
    seed: gr.Number

    @property
    def params(self) -> list[gr.components.Component]:
        return [self.model, self.system, self.temperature, self.top_p, self.top_k,
                self.max_new_tokens, self.repetition_penalty, self.seed]


def model_choices(manager: ModelManager) -> list[tuple[str, str]]:
    return [(_choice_label(manager, s), s.id) for s in manager.statuses()]


def _choice_label(manager: ModelManager, status: ModelStatus) -> str:
    label = status.name
    entry = manager.registry.get(status.id)
    if entry is not None and entry.backend == "transformers":
        label += f" [{entry.settings_label}]"
        if entry.trust_remote_code:
            label += " ⚠ remote code"
    return label if status.usable else f"{label} ({status.state.value})"


def model_info(manager: ModelManager, model_id: str | None) -> str:
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
    if entry.description:
        lines.append(entry.description)
    return "  \n".join(lines)


def build_chat_tab(manager: ModelManager, initial_model: str) -> ChatControls:
    defaults = manager.entry(initial_model).defaults
    with gr.Row():
        model = gr.Dropdown(choices=model_choices(manager), value=initial_model, label="Model",
                            scale=2, interactive=True)
        info = gr.Markdown(model_info(manager, initial_model), elem_id="model-info")
    chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chatbot", sanitize_html=True,
                         render_markdown=True, buttons=["copy"], feedback_options=None,
                         allow_tags=False)
    with gr.Row():
        message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False,
                             scale=8, lines=1, max_lines=8, elem_id="message", autofocus=True)
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
    with gr.Row():
        regenerate = gr.Button("Regenerate", size="sm", elem_id="regenerate")
        clear = gr.Button("Clear", size="sm", elem_id="clear")
    with gr.Accordion("Parameters", open=False):
        system = gr.Textbox(label="System prompt", lines=2,
                            placeholder="Empty: the model's own default")
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, step=0.05, value=defaults.temperature,
                                    label="Temperature (0 = greedy)", elem_id="temperature")
            top_p = gr.Slider(0.05, 1.0, step=0.05, value=defaults.top_p, label="Top p")
            top_k = gr.Slider(0, 200, step=1, value=defaults.top_k, label="Top k (0 = off)")
        with gr.Row():
            max_new_tokens = gr.Slider(1, 8192, step=1, value=defaults.max_new_tokens,
                                       label="Max new tokens")
            repetition_penalty = gr.Slider(0.5, 2.0, step=0.05,
                                           value=defaults.repetition_penalty,
                                           label="Repetition penalty")
            seed = gr.Number(value=_seed_value(defaults), precision=0,
                             label="Seed (-1 = random)")
    controls = ChatControls(model, info, chatbot, message, gr.State([]), system, temperature,
                            top_p, top_k, max_new_tokens, repetition_penalty, seed)
    handlers = ChatHandlers(manager)
    outputs = [chatbot, controls.turns, message]
    send_inputs = [message, controls.turns, *controls.params]
    replies = [
        message.submit(handlers.send, send_inputs, outputs, api_name="send"),
        send.click(handlers.send, send_inputs, outputs, api_name=False),
        regenerate.click(handlers.regenerate, [controls.turns, *controls.params], outputs,
                         api_name="regenerate"),
    ]
    for reply in replies:  # the panel then shows where the model was loaded
        reply.then(handlers.describe_model, [model], [info], api_name=False, queue=False)
    stop.click(handlers.stop, None, None, api_name="stop", queue=False)
    # Clearing ends the running reply too, so its last update cannot bring the chat back.
    clear.click(handlers.clear, None, [chatbot, controls.turns], api_name="clear",
                queue=False, cancels=replies)
    chatbot.clear(handlers.clear, None, [chatbot, controls.turns], api_name=False,
                  queue=False, cancels=replies)
    model.change(handlers.select_model, [model],
                 [info, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed],
                 api_name=False)
    return controls


def _seed_value(defaults: GenerationDefaults) -> int:
    return -1 if defaults.seed is None else defaults.seed


class ChatHandlers:
    """Gradio callbacks; they translate page values and leave the work to the manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def send(self, message: str, turns: list[Turn], model_id: str, system: str,
             temperature: float, top_p: float, top_k: float, max_new_tokens: float,
             repetition_penalty: float, seed: float | None,
             request: gr.Request) -> Iterator[tuple]:
        turns = list(turns or [])
        if not (message or "").strip():
            yield chatbot_messages(turns), turns, message
            return
        turns.append(Turn("user", message))
        params = _params(temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)
        yield from self._reply(turns, model_id, system, params, _session_key(request))

    def regenerate(self, turns: list[Turn], model_id: str, system: str, temperature: float,
                   top_p: float, top_k: float, max_new_tokens: float,
                   repetition_penalty: float, seed: float | None,
                   request: gr.Request) -> Iterator[tuple]:
        turns = list(turns or [])
        while turns and turns[-1].role == "assistant":
            turns.pop()
        if not turns:
            yield chatbot_messages(turns), turns, gr.update()
            return
        params = _params(temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)
        yield from self._reply(turns, model_id, system, params, _session_key(request))

    def stop(self, request: gr.Request) -> None:
        self.manager.cancel(_session_key(request))

    def clear(self, request: gr.Request) -> tuple[list, list]:
        self.manager.cancel(_session_key(request))
        return [], []

    def describe_model(self, model_id: str) -> str:
        return model_info(self.manager, model_id)

    def select_model(self, model_id: str) -> tuple:
        try:
            defaults = self.manager.entry(model_id).defaults
        except (UnknownModel, ModelUnavailable):
            return (model_info(self.manager, model_id),) + (gr.update(),) * 6
        return (model_info(self.manager, model_id), defaults.temperature, defaults.top_p,
                defaults.top_k, defaults.max_new_tokens, defaults.repetition_penalty,
                _seed_value(defaults))

    def _reply(self, turns: list[Turn], model_id: str, system: str, params: GenParams,
               key: str) -> Iterator[tuple]:
        messages = prompt_messages(turns, system or "")
        reply = Turn("assistant", "")
        turns.append(reply)
        yield chatbot_messages(turns, streaming=True), turns, ""
        cancel = self.manager.begin_generation(key)
        meter = ReplyMeter()
        last_update = time.perf_counter()
        try:
            name = self.manager.entry(model_id).name
            for event in self.manager.stream_events(model_id, messages, params, cancel):
                if isinstance(event, Loading):
                    reply.footer = (f"Loading {name}: {event.step} "
                                    f"{_progress_bar(event.fraction)} {event.fraction:.0%}")
                elif isinstance(event, Waiting):
                    reply.footer = (f"Waiting for {name}: {event.ahead} "
                                    f"request{'s' if event.ahead != 1 else ''} ahead of you")
                else:
                    meter.observe(event)
                    reply.content += event.text
                    reply.footer = ""
                now = time.perf_counter()
                if now - last_update >= UPDATE_INTERVAL_S or not isinstance(event, Chunk):
                    last_update = now
                    yield chatbot_messages(turns, streaming=True), turns, ""
            reply.footer = meter.summary(name)
        except (UnknownModel, ModelUnavailable, BackendError) as exc:
            reply.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - never a traceback on the page
            log.exception("reply from %s failed", model_id)
            reply.error = f"unexpected error: {exc}"
        finally:
            self.manager.end_generation(key, cancel)
        yield chatbot_messages(turns), turns, ""


def _params(temperature: float, top_p: float, top_k: float, max_new_tokens: float,
            repetition_penalty: float, seed: float | None) -> GenParams:
    return GenParams(
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        max_new_tokens=int(max_new_tokens),
        repetition_penalty=float(repetition_penalty),
        seed=None if seed is None or seed < 0 else int(seed),
    )


def _progress_bar(fraction: float, width: int = 12) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "▰" * filled + "▱" * (width - filled)


def _session_key(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"
