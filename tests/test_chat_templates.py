"""Named fallback templates render exactly the prompts their model families were tuned on."""
from __future__ import annotations

import pytest

from backends.base import BackendError, Message
from backends.chat_template import NAMED_TEMPLATES, ChatTemplate, guess_fallback

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
    "gemma": ("<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
              "<start_of_turn>model\nHello.<end_of_turn>\n"
              "<start_of_turn>user\nName the capital of France.<end_of_turn>\n"
              "<start_of_turn>model\n"),
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nName the capital of France.<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "phi3": ("<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n"
             "<|user|>\nName the capital of France.<|end|>\n<|assistant|>\n"),
}

# (BOS, EOS) text as each family's tokenizer has them; "<s>", "</s>" elsewhere.
SPECIAL_TOKENS = {"gemma": ("<bos>", "<eos>"), "llama3": ("<|begin_of_text|>", "<|end_of_text|>"),
                  "phi3": ("<s>", "<|endoftext|>")}

# The templates as the models publish them (tokenizer_config.json), for comparison: Gemma 3
# (google/gemma-3-4b-it), Meta-Llama-3-8B-Instruct, Phi-3.5-mini-instruct.
OFFICIAL = {
    "gemma": (
        "{{ bos_token }}\n"
        "{%- if messages[0]['role'] == 'system' -%}\n"
        "    {%- if messages[0]['content'] is string -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
        "    {%- else -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
        "    {%- endif -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n"
        "{%- else -%}\n"
        "    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n"
        "{%- endif -%}\n"
        "{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
        "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
        "    {%- endif -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n"
        "        {%- set role = \"model\" -%}\n"
        "    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n"
        "    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {%- if message['content'] is string -%}\n"
        "        {{ message['content'] | trim }}\n"
        "    {%- elif message['content'] is iterable -%}\n"
        "        {%- for item in message['content'] -%}\n"
        "            {%- if item['type'] == 'image' -%}\n"
        "                {{ '<start_of_image>' }}\n"
        "            {%- elif item['type'] == 'text' -%}\n"
        "                {{ item['text'] | trim }}\n"
        "            {%- endif -%}\n"
        "        {%- endfor -%}\n"
        "    {%- else -%}\n"
        "        {{ raise_exception(\"Invalid content type\") }}\n"
        "    {%- endif -%}\n"
        "    {{ '<end_of_turn>\\n' }}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        "    {{'<start_of_turn>model\\n'}}\n"
        "{%- endif -%}\n"),
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}"),
    "phi3": (
        "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
        "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
        "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
        "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"),
}


def fallback(name: str) -> ChatTemplate:
    bos, eos = SPECIAL_TOKENS.get(name, ("<s>", "</s>"))
    return ChatTemplate.choose(name, None, bos_token=bos, eos_token=eos, model_name="m")


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
def test_named_fallback_renders_a_two_turn_chat_with_a_system_prompt(name):
    template = fallback(name)
    assert template.render(CHAT) == EXPECTED[name]
    assert template.origin == f"fallback {name}"
    assert template.stop_strings


CHATS = {"system": CHAT, "no-system": CHAT[1:], "ended-reply": CHAT[1:3],
         "empty-system": [Message("system", ""), *CHAT[1:]]}


# Gemma's own template would open the first turn with "\n\n" for an empty system prompt;
# ours leaves it out (the app never sends one).
@pytest.mark.parametrize("name,chat", [(n, c) for n in sorted(OFFICIAL) for c in CHATS
                                       if (n, c) != ("gemma", "empty-system")])
def test_fallback_renders_what_the_official_template_renders(name, chat):
    ours, official = fallback(name), ChatTemplate(OFFICIAL[name], *SPECIAL_TOKENS[name])
    chat = CHATS[chat]
    for generation_prompt in (True, False):
        assert ours.render(chat, generation_prompt) == official.render(chat, generation_prompt)


@pytest.mark.parametrize("name", ["gemma", "llama3", "phi3"])
def test_new_fallbacks_pass_the_template_check(name):
    template = fallback(name)
    eos = SPECIAL_TOKENS[name][1]
    assert template.check([eos]) == [f"no chat template in this model: using the {name} fallback"]


@pytest.mark.parametrize("architecture,expected", [
    ("gemma", "gemma"), ("gemma2", "gemma"), ("gemma3", "gemma"), ("llama", "llama3"),
    ("mistral", "mistral"), ("falcon", "falcon"), ("phi3", "phi3"), ("qwen2", "chatml"),
    ("qwen3", "chatml"), ("LLaMA", "llama3"), ("gpt2", "chatml"), ("", "chatml"), (None, "chatml"),
])
def test_guess_fallback_from_the_architecture(architecture, expected):
    assert guess_fallback(architecture) == expected
    assert expected in NAMED_TEMPLATES


def test_a_model_with_no_template_is_refused_naming_the_guess_and_completion_mode():
    with pytest.raises(BackendError, match=r"m\.gguf has no chat template: set chat_template to "
                                           r"a named fallback \(e\.g\. gemma\) or none for "
                                           r"completion mode"):
        ChatTemplate.choose(None, None, bos_token="", eos_token="", model_name="m.gguf",
                            architecture="gemma2")


def test_completion_mode_joins_the_texts_and_continues_the_last():
    template = ChatTemplate.choose("none", "the model's own", bos_token="<s>", eos_token="</s>",
                                   model_name="m")
    assert template.render(CHAT) == "You are terse.\n\nHi\n\nHello.\n\nName the capital of France."
    assert template.render([Message("system", ""), Message("user", "Once upon")]) == "Once upon"
    cut = [*CHAT, Message("assistant", "Paris, on the Seine ")]
    assert template.render(cut, continue_final=True).endswith("France.\n\nParis, on the Seine")
    assert template.stop_strings == ()
    assert template.check(["</s>"]) == []
    assert template.describe_origin("the GGUF file's metadata") == \
        "none: completion mode (models.yaml)"


def test_only_exactly_none_means_completion_mode():
    template = ChatTemplate.choose("None", None, bos_token="", eos_token="", model_name="m")
    assert not template.completion and template.origin == "models.yaml"


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
