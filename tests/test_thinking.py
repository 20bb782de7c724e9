"""Thinking models with the real SmolLM2 (llama.cpp): the thought streams apart from the
answer, a thinking budget makes the backend write the end marker, the next turn's prompt
holds no thought, the Think switch goes through the template, and the API returns the
thought as `reasoning_content`, checked with the official openai client."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from backends.base import Chunk, GenParams, Message
from backends.sampling import SamplingSettings
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.context import with_system
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.conversations.service import stored_reply
from tests.conftest import SAFETY_S, SHIPPED_MODELS, free_port, until
from tests.test_compare import STORY_PROMPT

pytestmark = pytest.mark.slow

# SmolLM2's own ChatML with a thinking model's generation prompt, as Qwen3's template has it:
# the reply starts inside a thought, and enable_thinking=false writes an empty one instead.
THINKING_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}")
QUESTION = [Message("user", "Name the capital of France.")]
STORY = [Message("user", STORY_PROMPT)]  # SmolLM2 thinks on about it well past 20 tokens


@pytest.fixture(scope="module")
def thinking(smollm2_path) -> Iterator[ModelManager]:
    """"smol": SmolLM2 with the usual markers declared; "smol-think": its template opens a
    thought on every reply (markers found in the template)."""
    entries = (
        ModelEntry(id="smol", name="SmolLM2", backend="llamacpp", path=str(smollm2_path),
                   reasoning={"start": "<think>", "end": "</think>"}),
        ModelEntry(id="smol-think", name="SmolLM2 thinking", backend="llamacpp",
                   path=str(smollm2_path), chat_template=THINKING_TEMPLATE),
    )
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=()),
                           make_backend)
    yield manager
    manager.unload_all()


def reply(manager: ModelManager, model_id: str, messages, params: GenParams):
    with manager.start([(model_id, messages, params)], threading.Event()) as replies:
        chunks = []
        for _, event in replies:
            assert not isinstance(event, Exception), event
            if isinstance(event, Chunk):
                chunks.append(event)
        return replies.live[0], chunks


def test_a_prefilled_thought_is_cut_at_its_budget_and_an_answer_follows(thinking):
    prefilled = [*STORY, Message("assistant", "<think>\n")]
    params = GenParams(SamplingSettings(temperature=0.0, max_new_tokens=120, thinking_budget=20), continue_final=True)
    live, chunks = reply(thinking, "smol", prefilled, params)
    usage = chunks[-1].usage
    assert live.thought.strip(), "the model wrote no thought"
    # The budget, not the model, ended the thought: exactly 20 thought tokens, then the
    # backend wrote the end marker and the model went on to answer.
    assert usage.reasoning_tokens == 20, usage
    assert live.text.strip(), "no answer after the thought"
    assert "<think>" not in live.text + live.thought and "</think>" not in live.text
    assert any(c.thought for c in chunks) and any(c.text for c in chunks)
    first_answer = next(i for i, c in enumerate(chunks) if c.text)
    assert not any(c.thought for c in chunks[first_answer:]), "thought after the answer"
    message = stored_reply(live)
    assert message.thought == live.thought and message.thought_tokens == 20
    assert message.thought_seconds is not None and message.content == live.text
    # Without a budget the same thought runs on past 20 tokens.
    unlimited, chunks = reply(thinking, "smol", prefilled,
                              GenParams(SamplingSettings(temperature=0.0, max_new_tokens=40), continue_final=True))
    assert chunks[-1].usage.reasoning_tokens > 20


def test_the_template_opens_the_thought_and_the_next_prompt_leaves_it_out(thinking):
    live, chunks = reply(thinking, "smol-think", STORY,
                         GenParams(SamplingSettings(temperature=0.0, max_new_tokens=96, thinking_budget=24)))
    assert live.thought.strip() and live.text.strip()
    assert chunks[-1].usage.reasoning_tokens == 24
    stored = stored_reply(live)
    follow_up = with_system("", [*STORY, stored, Message("user", "Make it shorter.")])
    report, _ = thinking.inspect("smol-think", follow_up, GenParams())
    assert stored.content.strip() in report.prompt
    assert live.thought.strip()[:40] not in report.prompt, "the thought went back in"


def test_the_think_switch_goes_through_the_template(thinking):
    thinking.load("smol-think")
    assert thinking.template_warnings("smol-think") == []  # a reply that opens thinking
    report, _ = thinking.inspect("smol-think", QUESTION, GenParams(SamplingSettings(think=False)))
    assert report.prompt.endswith("<think>\n\n</think>\n\n")
    live, chunks = reply(thinking, "smol-think", QUESTION,
                         GenParams(SamplingSettings(temperature=0.0, max_new_tokens=24, think=False)))
    assert live.thought == "" and live.text.strip()
    assert chunks[-1].usage.reasoning_tokens == 0
    assert "Paris" in live.text
    # A model whose template has no switch says the setting is not applied.
    assert thinking.engine("smol") and \
        "the Think switch (this model's template has none)" in \
        thinking.load("smol").unhonoured(GenParams(SamplingSettings(think=True)))


def test_the_api_returns_reasoning_content_apart_streamed_and_not(thinking):
    import openai
    import uvicorn
    from fastapi import FastAPI

    from chatcore.api.v1 import build_api

    app = FastAPI()
    app.include_router(build_api(thinking, None, None))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    try:
        assert until(lambda: server.started, SAFETY_S), "the API did not start"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        body = dict(model="smol-think", temperature=0, max_tokens=96,
                    messages=[{"role": "user", "content": STORY_PROMPT}],
                    extra_body={"thinking_budget": 24})
        whole = client.chat.completions.create(**body)
        message = whole.choices[0].message
        thought = message.model_extra["reasoning_content"]
        assert thought.strip() and message.content.strip()
        assert "</think>" not in message.content and "<think>" not in thought
        assert whole.usage.completion_tokens_details.reasoning_tokens == 24
        streamed_thought, streamed_answer = "", ""
        for event in client.chat.completions.create(**body, stream=True):
            for choice in event.choices:
                delta = choice.delta
                streamed_thought += (delta.model_extra or {}).get("reasoning_content") or ""
                streamed_answer += delta.content or ""
        assert (streamed_thought, streamed_answer) == (thought, message.content)
    finally:
        server.should_exit = True
        runner.join(SAFETY_S)
