"""Chat templates rendered the way Hugging Face renders them, in a sandbox.

Templates come from model files a person downloaded, so they run in Jinja's immutable
sandbox: a template can format text, not touch the process. Models that ship no template
(Falcon) take a named fallback from models.yaml; each fallback knows its stop strings.
Base models take `chat_template: none`: completion mode, the conversation's text continued
as-is with no turn markers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.base import BackendError, Message
from backends.notes import Note
from backends.thinking import template_markers


@dataclass(frozen=True)
class NamedTemplate:
    source: str
    stop_strings: tuple[str, ...]


_SYSTEM_FIRST = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
)

NAMED_TEMPLATES: dict[str, NamedTemplate] = {
    "chatml": NamedTemplate(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        ("<|im_end|>",),
    ),
    "llama2": NamedTemplate(
        _SYSTEM_FIRST
        + "{% for m in turns %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] "
        "{% if loop.first and system %}<<SYS>>\n{{ system }}\n<</SYS>>\n\n{% endif %}"
        "{{ m['content'] }} [/INST]{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}"
        "{% endfor %}",
        ("</s>",),
    ),
    "mistral": NamedTemplate(
        _SYSTEM_FIRST
        + "{{ bos_token }}{% for m in turns %}{% if m['role'] == 'user' %}[INST] "
        "{% if loop.first and system %}{{ system }}\n\n{% endif %}{{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}",
        ("</s>",),
    ),
    "falcon": NamedTemplate(
        _SYSTEM_FIRST
        + "{% if system %}{{ system }}\n\n{% endif %}{% for m in turns %}"
        "{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
        "{% else %}Falcon: {{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}Falcon:{% endif %}",
        ("\nUser:", "<|endoftext|>"),
    ),
    # Gemma 3's published template (Gemma and Gemma 2 render the same without a system
    # prompt, which they do not support): the system prompt opens the first user turn.
    # The official template also raises on roles that do not alternate; this one renders.
    "gemma": NamedTemplate(
        _SYSTEM_FIRST
        + "{{ bos_token }}{% for m in turns %}"
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        "{% if loop.first and system %}{{ system }}\n\n{% endif %}"
        "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
        ("<end_of_turn>",),
    ),
    # Meta-Llama-3-8B-Instruct's template; 3.1 adds a dated system preamble and tools.
    "llama3": NamedTemplate(
        "{{ bos_token }}{% for m in messages %}"
        "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}",
        ("<|eot_id|>",),
    ),
    # Phi-3 / Phi-3.5 mini's template: an empty system prompt is left out.
    "phi3": NamedTemplate(
        "{% for m in messages %}{% if m['role'] != 'system' or m['content'] %}"
        "<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}",
        ("<|end|>",),
    ),
    "zephyr": NamedTemplate(
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        ("</s>",),
    ),
}


# `chat_template: none` in models.yaml: no chat template, for base models.
COMPLETION_MODE = "none"
# text-generation-webui's notebook mode: the texts (system prompt first) joined by a blank
# line, the last one continued; a message with no text adds nothing.
_COMPLETION_SOURCE = (
    "{% for m in messages if m['content'] %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ m['content'] }}{% endfor %}"
)

# Architecture (GGUF `general.architecture`, HF `model_type`) -> the fallback to guess.
_FALLBACK_FOR_ARCHITECTURE = {
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma",
    # Most llama-architecture GGUFs that ship no template today are Llama 3 repacks
    # (Llama 2 ones mostly predate templates in GGUF and are rare now).
    "llama": "llama3",
    "mistral": "mistral",
    "falcon": "falcon",
    "phi3": "phi3",
    "qwen2": "chatml", "qwen3": "chatml",
}


def guess_fallback(architecture: str | None) -> str:
    """The named fallback most likely right for a model of this architecture.

    Only a guess: a fine-tune may use another format, so it is offered, never forced;
    unknown architectures get chatml, the most common format among recent fine-tunes.
    """
    return _FALLBACK_FOR_ARCHITECTURE.get((architecture or "").lower(), "chatml")


def fallback_warning(name: str) -> Note:
    """What a chat through a named fallback risks, said before a load as after it."""
    return Note(f"no chat template in this model: using the {name} fallback",
                "models.template.fallback", name=name)


class ChatTemplate:
    """A compiled chat template with the special tokens it refers to."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "",
                 stop_strings: Sequence[str] = (), origin: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_template_error
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise BackendError(f"chat template does not compile: {exc}") from exc
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stop_strings = tuple(stop_strings)
        self.origin = origin

    @classmethod
    def choose(cls, override: str | None, shipped: str | None, *, bos_token: str,
               eos_token: str, model_name: str, architecture: str | None = None) -> ChatTemplate:
        """The entry's override (a fallback name, "none" or inline Jinja), else the model's own.

        `architecture` only words the refusal of a model with neither: it names the
        fallback `guess_fallback` would pick.
        """
        if override == COMPLETION_MODE:
            return cls(_COMPLETION_SOURCE, bos_token, eos_token, origin=COMPLETION_MODE)
        if override in NAMED_TEMPLATES:
            named = NAMED_TEMPLATES[override]
            return cls(named.source, bos_token, eos_token, named.stop_strings,
                       origin=f"fallback {override}")
        if override:
            return cls(override, bos_token, eos_token, origin="models.yaml")
        if shipped:
            return cls(shipped, bos_token, eos_token, origin="model")
        raise BackendError(
            f"{model_name} has no chat template: set chat_template to a named fallback "
            f"(e.g. {guess_fallback(architecture)}) or none for completion mode in its "
            f"models.yaml entry; the fallbacks are {', '.join(NAMED_TEMPLATES)}, and an "
            "inline Jinja template works too")

    @property
    def completion(self) -> bool:
        """True in completion mode: the prompt is plain text, with no turn markers."""
        return self.origin == COMPLETION_MODE

    def describe_origin(self, shipped_in: str) -> str:
        """Where this template came from, in words ("GGUF metadata", "named fallback falcon")."""
        if self.completion:
            return f"{COMPLETION_MODE}: completion mode (models.yaml)"
        if self.origin == "model":
            return shipped_in
        if self.origin.startswith("fallback "):
            return f"named fallback {self.origin.split(' ', 1)[1]} (models.yaml)"
        return "inline template in models.yaml"

    def check(self, eos_tokens: Sequence[str]) -> list[str]:
        """Render a two-turn sample and say what would go wrong in a chat.

        The prompt must end with the assistant's turn marker, and whatever ends the
        assistant's turn must stop generation (an end-of-sequence token or a stop string);
        otherwise a model chats with itself, or its end marker shows up in the reply.
        """
        if self.completion:
            return []  # chosen on purpose: there is no turn marker to check
        reply = "REPLY-9f3c"
        sample = [Message("user", "Hello"), Message("assistant", "Hi there"),
                  Message("user", "How are you?")]
        warnings = []
        try:
            prompt = self.render(sample)
            full = self.render([*sample, Message("assistant", reply), Message("user", "Bye")],
                               add_generation_prompt=False)
        except BackendError as exc:
            return [Note(f"the chat template fails on a two-turn sample: {exc}",
                         "models.template.sample_fails", detail=str(exc))]
        markers = template_markers(self.source)
        if markers and prompt.rstrip().endswith(markers.start):  # a thinking model's reply
            prompt = prompt.rstrip()[:-len(markers.start)]  # opens with its thought
        if prompt.rstrip().endswith(sample[-1].content) or not full.startswith(prompt) \
                or not full[len(prompt):].lstrip().startswith(reply):
            warnings.append(Note("the prompt does not end with the assistant's turn marker, "
                                 "so the model may not answer as the assistant",
                                 "models.template.no_assistant_marker"))
        end = full[full.find(reply) + len(reply):full.rfind("Bye")]
        marker = (end.strip().splitlines() or [""])[0]
        enders = [t for t in (*eos_tokens, *self.stop_strings) if t]
        if marker and not any(marker.startswith(t) or t in end for t in enders):
            warnings.append(Note(f"the template ends a reply with {marker[:40]!r}, which is "
                                 "not an end-of-sequence token or stop string: replies may "
                                 "run on into a new turn", "models.template.runs_on",
                                 marker=repr(marker[:40])))
        if self.origin.startswith("fallback "):
            warnings.insert(0, fallback_warning(self.origin.split(" ", 1)[1]))
        return warnings

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True,
               continue_final: bool = False, enable_thinking: bool | None = None) -> str:
        """The prompt; with `continue_final`, it ends inside the last (assistant) message.
        `enable_thinking` reaches templates that switch thinking (None: their default)."""
        switch = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        try:
            rendered = self._template.render(
                messages=[m.as_dict() for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt and not continue_final,
                **switch,
            )
        except TemplateError as exc:
            raise BackendError(f"chat template failed to render: {exc}") from exc
        if not continue_final:
            return rendered
        final = messages[-1].content.rstrip()
        end = rendered.rfind(final)
        if not final or end < 0:
            raise BackendError("this chat template rewrites replies, so a reply cannot be continued")
        return rendered[: end + len(final)]


def _raise_template_error(message: str) -> None:
    raise TemplateError(message)
