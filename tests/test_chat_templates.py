"""Named fallback templates render exactly the prompts their model families were tuned on."""
from __future__ import annotations

import pytest

from backends.base import BackendError, Message
from backends.chat_template import NAMED_TEMPLATES, ChatTemplate

CHAT = [
    Message("system", "You are terse."),
    Message("user", "Hi"),
    Message("assistant", "Hello."),
    Message("user", "Name the capital of France."),
]

EXPECTED = {
    "falcon": ("You are terse.\n\nUser: Hi\nFalcon: Hello.\n"
               "User: Name the capital of France.\nFalcon:"),
    "llama2": ("<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello. </s>"
               "<s>[INST] Name the capital of France. [/INST]"),
    "mistral": "<s>[INST] You are terse.\n\nHi [/INST]Hello.</s>[INST] Name the capital of France. [/INST]",
    "chatml": ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
               "<|im_start|>assistant\nHello.<|im_end|>\n"
               "<|im_start|>user\nName the capital of France.<|im_end|>\n<|im_start|>assistant\n"),
    "zephyr": ("<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello.</s>\n"
               "<|user|>\nName the capital of France.</s>\n<|assistant|>\n"),
}


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
def test_named_fallback_renders_a_two_turn_chat_with_a_system_prompt(name):
    template = ChatTemplate.choose(name, None, bos_token="<s>", eos_token="</s>", model_name="m")
    assert template.render(CHAT) == EXPECTED[name]
    assert template.origin == f"fallback {name}"
    assert template.stop_strings


def test_falcon_stops_before_writing_the_next_user_turn():
    assert "\nUser:" in NAMED_TEMPLATES["falcon"].stop_strings


def test_override_wins_over_the_model_template_and_inline_jinja_works():
    template = ChatTemplate.choose("{{ messages[-1]['content'] }}!", "ignored", bos_token="",
                                   eos_token="", model_name="m")
    assert template.render(CHAT) == "Name the capital of France.!"


def test_templates_run_sandboxed():
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(BackendError, match="chat template failed to render"):
        template.render(CHAT)


def test_raise_exception_in_a_template_becomes_a_readable_error():
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(BackendError, match="roles must alternate"):
        template.render(CHAT)
