"""Parts 4 and 6, in-process through the model manager (the path every request takes):
switching between resident models against a cold load, and long conversations, alone and
two taking turns on one model."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings
from bench.common import PROMPTS, ROOT
from chatcore.generation.registry import load_registry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager

SECOND_MODEL = "smollm2-135m-4bit"  # the same weights through transformers, 4-bit
TOPICS = ("dragons", "the sea", "mountains", "robots", "gardens", "music", "trains", "winter",
          "bees", "clocks", "maps", "rivers", "bread", "kites", "owls", "glass", "salt",
          "islands", "bridges", "tea")


def manager(cache: Path) -> ModelManager:
    return ModelManager(load_registry(ROOT / "models.yaml"),
                        lambda entry: make_backend(entry, cache_dir=cache))


def time_to_first_token(models: ModelManager, model_id: str, messages: list[Message],
                        max_tokens: int) -> tuple[float, str]:
    params = GenParams(SamplingSettings(temperature=0.0, max_new_tokens=max_tokens))
    with models.start([(model_id, messages, params)], threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
    live = replies.live[0]
    return live.meter.time_to_first_token, live.text


def switching(runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-switch-") as cache:
        models = manager(Path(cache))
        first = "smollm2-135m"
        for model_id in (first, SECOND_MODEL):  # both resident (and the 4-bit copy made)
            time_to_first_token(models, model_id, [Message("user", PROMPTS[0])], 4)
        resident = []
        for prompt in PROMPTS[1:runs + 1]:
            time_to_first_token(models, first, [Message("user", prompt)], 4)
            resident.append(time_to_first_token(models, SECOND_MODEL,
                                                [Message("user", prompt)], 4)[0])
        cold = {}
        for model_id in (first, SECOND_MODEL):
            models.unload(model_id)
            cold[model_id] = time_to_first_token(models, model_id,
                                                 [Message("user", PROMPTS[-1])], 4)[0]
        models.unload_all()
    resident.sort()
    return {"to_resident_time_to_first_token_s": resident[len(resident) // 2],
            "cold_time_to_first_token_s": cold, "from": first, "to": SECOND_MODEL}


def conversations(turns: int, max_tokens: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-talk-") as cache:
        models = manager(Path(cache))
        model_id = "smollm2-135m"
        time_to_first_token(models, model_id, [Message("user", PROMPTS[0])], 4)  # load

        def turn(history: list[Message], topic: str) -> float:
            history.append(Message("user", f"Tell me something about {topic}."))
            ttft, text = time_to_first_token(models, model_id, history, max_tokens)
            history.append(Message("assistant", text))
            return ttft

        alone: list[Message] = []
        single = [turn(alone, TOPICS[i]) for i in range(turns)]
        first, second = [], []
        a: list[Message] = []
        b: list[Message] = []
        for i in range(turns):
            first.append(turn(a, TOPICS[(i + 5) % len(TOPICS)]))
            second.append(turn(b, TOPICS[(i + 12) % len(TOPICS)]))
        prompt_tokens = models.load(model_id).count_tokens(a)
        models.unload_all()
    return {"turns": turns, "single": single, "alternating_a": first, "alternating_b": second,
            "single_last_vs_first": single[-1] / single[0],
            "alternating_last_vs_first": max(first[-1] / first[0], second[-1] / second[0]),
            "prompt_tokens_at_last_turn": prompt_tokens}

