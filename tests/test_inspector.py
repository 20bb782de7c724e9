"""What each model sees: the rendered prompt, template checks, the context meter, and
memory that an unload gives back."""
from __future__ import annotations

import threading

import pytest

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings
from backends.chat_template import NAMED_TEMPLATES, ChatTemplate
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.i18n import english
from chatui.models_tab import status_rows
from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS
from tests.fakes import reply_chunks

CONVERSATION = [Message("system", "You answer in one sentence."),
                Message("user", "Hello!"), Message("assistant", "Hi, how can I help?"),
                Message("user", CAPITAL_PROMPT)]
PARAMS = GenParams(SamplingSettings(temperature=0.0, max_new_tokens=16), stop=("###",))


def as_dicts(messages) -> list[dict]:
    return [m.as_dict() for m in messages]


@pytest.mark.slow
def test_the_inspector_shows_what_the_tokenizer_itself_renders(smollm2, smollm2_fp32):
    expected = smollm2_fp32._tokenizer.apply_chat_template(
        as_dicts(CONVERSATION), tokenize=False, add_generation_prompt=True)
    for backend, origin in ((smollm2, "the GGUF file's metadata"),
                            (smollm2_fp32, "the tokenizer's config")):
        report = backend.prompt_report(CONVERSATION, PARAMS)
        assert report.prompt == expected
        assert report.template == origin
        assert report.prompt_tokens == backend.count_tokens(CONVERSATION)
        assert report.stop_strings[0] == "###"
        assert 2 in report.eos_ids  # <|im_end|>, SmolLM2's end of turn
        assert backend.template_warnings() == []


def test_a_template_without_an_end_of_turn_stop_is_flagged():
    chatml = NAMED_TEMPLATES["chatml"].source
    silent = ChatTemplate(chatml, eos_token="</s>")  # <|im_end|> ends turns but stops nothing
    [warning] = silent.check(["</s>"])
    assert "ends a reply with '<|im_end|>'" in warning and "not an end-of-sequence" in warning
    assert ChatTemplate(chatml, stop_strings=("<|im_end|>",)).check([]) == []
    no_prompt = ChatTemplate(chatml.replace("<|im_start|>assistant\n", ""),
                             stop_strings=("<|im_end|>",))
    assert any("does not end with the assistant's turn marker" in w
               for w in no_prompt.check([]))
    falcon = ChatTemplate.choose("falcon", None, bos_token="", eos_token="<|endoftext|>",
                                 model_name="falcon")
    assert falcon.check(["<|endoftext|>"]) == [
        "no chat template in this model: using the falcon fallback"]


@pytest.mark.slow
def test_template_warnings_reach_the_models_tab_and_the_dropdown(smollm2_path, tmp_path):
    from chatui.chat_tab import model_choices

    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - {{id: plain, backend: llamacpp, path: '{smollm2_path}',"
        " chat_template: \"{% for m in messages %}{{ m['content'] }}\\n{% endfor %}\"}\n")
    manager = ModelManager(load_registry(models), make_backend)
    manager.load("plain")
    warnings = manager.template_warnings("plain")
    assert any("assistant's turn marker" in w for w in warnings)
    assert any(w in status_rows(manager, texts=english())[0][-1] for w in warnings)
    assert model_choices(manager, texts=english())[0][0].endswith("⚠ template")
    manager.unload_all()


@pytest.mark.slow
def test_the_meter_counts_what_the_backend_counts():
    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
    backend = manager.load("smollm2-135m")
    system, history, draft = CONVERSATION[0].content, CONVERSATION[1:3], "And of Italy?"
    meter = manager.context_meter("smollm2-135m", system, history, draft, 512)
    whole = [CONVERSATION[0], *history, Message("user", draft)]
    assert meter.total == backend.count_tokens(whole)
    assert meter.system == backend.count_tokens([CONVERSATION[0], Message("user", "")])
    # No system prompt: SmolLM2's template adds its own, and an empty draft counts nothing.
    bare = manager.context_meter("smollm2-135m", "", [], "", 512)
    assert bare.system == backend.count_tokens([Message("user", "")]) > \
        backend.count_tokens([Message("system", "x"), Message("user", "")])
    assert bare.draft == bare.history == 0
    assert meter.budget == 2048 - 512 and meter.left_out == 0
    long_history = [Message("user", "word " * 400), Message("assistant", "ok"),
                    Message("user", "word " * 400), Message("assistant", "ok")]
    crowded = manager.context_meter("smollm2-135m", system, long_history, "word " * 700, 512)
    assert crowded.total > crowded.budget and crowded.left_out >= 2
    manager.unload_all()


@pytest.mark.slow
def test_unloading_the_smollm2_fp32_gives_memory_back_or_says_so(smollm2_path):
    entry = ModelEntry(id="fp32", backend="transformers", path=str(smollm2_path))
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           make_backend)
    list(reply_chunks(manager, "fp32", [Message("user", CAPITAL_PROMPT)], PARAMS,
                             threading.Event()))
    manager.unload("fp32")
    report = manager.memory_report("fp32")
    print(f"\nprocess memory: {report.before_load / 1e6:.0f} MB before the load, "
          f"{report.loaded / 1e6:.0f} MB loaded, {report.after_unload / 1e6:.0f} MB after "
          f"the unload ({report.retained / 1e6:+.0f} MB)")
    assert report.loaded > report.before_load
    row = status_rows(manager, texts=english())[0][-1]
    if report.returned:
        assert report.after_unload <= report.before_load * 1.15 or \
            report.retained <= report.grew_by * 0.15
        assert "given back" in row and "not given back" not in row
    else:
        assert "not given back" in row


@pytest.mark.slow
def test_the_inspector_on_the_page_handlers(smollm2_path, tmp_path):
    from types import SimpleNamespace

    from chatcore.conversations.store import Store
    from chatui.chat_handlers import ChatHandlers

    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
    store = Store(tmp_path)
    chat = ChatHandlers(manager, store, texts=english())
    request = SimpleNamespace(session_hash="s", username="")
    *_, last = chat.send(CAPITAL_PROMPT, None, False, "smollm2-135m", "Be brief.",
                         SamplingSettings(temperature=0.0, max_new_tokens=16),
                         request=request)
    conversation_id = last[2]
    prompt, details = chat.inspect(conversation_id, request)
    backend = manager.load("smollm2-135m")
    assert prompt == backend.render_prompt([Message("system", "Be brief."),
                                            Message("user", CAPITAL_PROMPT)])
    assert "GGUF file's metadata" in details and '"temperature": 0.0' in details
    meter = chat.meter("a draft", conversation_id, "smollm2-135m", "Be brief.", 16,
                       request=request)
    assert meter.startswith("Context: system ") and "of 2032 tokens" in meter
    manager.unload_all()
    store.close()
