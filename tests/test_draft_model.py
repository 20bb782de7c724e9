"""Speculative decoding with a draft model, with the real SmolLM2 as the target: greedy (and
seeded) text is the text of decoding without drafts, whether the draft guesses well
(SmolLM2 itself, wired from models.yaml) or badly (a tiny random-weight llama written with
SmolLM2's tokenizer); the drafted and accepted counts reach the reply's usage; a draft of
another tokenizer is refused at load, naming both models."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from backends.base import BackendError, GenParams, Message
from backends.draft_model import DraftSpec
from backends.llamacpp import LlamaCppBackend
from backends.sampling import SamplingSettings
from chatcore.generation.factory import make_backend
from chatcore.generation.registry import load_registry
from tests.helpers import greedy
from tests.test_speculative import OTHERS, PROMPTS, QUOTING

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

CONTEXT = 1024
TOKENS = 16  # per reply: 20 prompts stay cheap
NOISY_PROMPTS = QUOTING[:3] + OTHERS[:3]


def random_llama(source: Path, target: Path, swap: tuple[int, int] | None = None) -> Path:
    """A 2-layer llama of random weights with every tokenizer field of `source` (a few MB);
    `swap` exchanges two tokens' texts, making a vocabulary that differs only there."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, arch="llama")
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        value, kind = field.contents(), field.types[0]
        if field.name == "tokenizer.ggml.tokens" and swap:
            value[swap[0]], value[swap[1]] = value[swap[1]], value[swap[0]]
        sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub_kind)
    n_vocab, n_embd, n_ff, layers = len(reader.fields["tokenizer.ggml.tokens"].data), 64, 128, 2
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd)
    rng = np.random.default_rng(7)

    def weights(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(layers):
        for name, shape in (("attn_q", (n_embd, n_embd)), ("attn_k", (n_embd, n_embd)),
                            ("attn_v", (n_embd, n_embd)), ("attn_output", (n_embd, n_embd)),
                            ("ffn_gate", (n_ff, n_embd)), ("ffn_up", (n_ff, n_embd)),
                            ("ffn_down", (n_embd, n_ff))):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(*shape))
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@pytest.fixture(scope="module")
def noise_gguf(smollm2_path, tmp_path_factory) -> Path:
    return random_llama(smollm2_path, tmp_path_factory.mktemp("draft") / "noise.gguf")


def loaded(backend: LlamaCppBackend):
    backend.load()
    return backend


class Plain:
    """SmolLM2 without drafts, each greedy reply decoded once for the module."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.backend = backend
        self._texts: dict[tuple[str, int], str] = {}

    def texts(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        wanted = [p for p in prompts if (p, max_new_tokens) not in self._texts]
        for prompt, (text, _) in zip(wanted, replies(self.backend, wanted,
                                                     greedy(max_new_tokens))):
            self._texts[prompt, max_new_tokens] = text
        return [self._texts[p, max_new_tokens] for p in prompts]


@pytest.fixture(scope="module")
def plain(smollm2_path):
    backend = loaded(LlamaCppBackend(smollm2_path, context_length=CONTEXT, parallel=2,
                                     speculative=False))
    yield Plain(backend)
    backend.unload()


@pytest.fixture(scope="module")
def self_drafted(smollm2_path, tmp_path_factory):
    """SmolLM2 drafting for itself, as models.yaml wires it (registry, factory)."""
    models = tmp_path_factory.mktemp("models") / "models.yaml"
    models.write_text(
        "models:\n"
        f"  - {{id: target, backend: llamacpp, path: '{smollm2_path}', draft: drafter,\n"
        f"      context_length: {CONTEXT}, parallel: 2}}\n"
        f"  - {{id: drafter, name: Drafter, backend: llamacpp, path: '{smollm2_path}'}}\n",
        encoding="utf-8")
    backend = loaded(make_backend(load_registry(models).get("target")))
    yield backend
    backend.unload()


@pytest.fixture(scope="module")
def noise_drafted(smollm2_path, noise_gguf):
    backend = loaded(LlamaCppBackend(smollm2_path, context_length=CONTEXT, parallel=1,
                                     draft=DraftSpec(noise_gguf, "noise", "smollm2")))
    yield backend
    backend.unload()


def replies(backend, prompts, params: GenParams) -> list[tuple[str, object]]:
    """Each prompt's text and usage, one at a time (drafts are made for a reply alone)."""
    out = []
    for prompt in prompts:
        chunks = list(backend.stream_chat([Message("user", prompt)], params, threading.Event()))
        out.append(("".join(c.text for c in chunks), chunks[-1].usage))
    return out


def counts(results) -> tuple[int, int]:
    return (sum(u.accepted_prediction_tokens for _, u in results),
            sum(u.rejected_prediction_tokens for _, u in results))


def test_a_draft_model_of_the_same_weights_gives_plain_text_and_most_drafts_are_taken(
        self_drafted, plain):
    assert "drafts from Drafter" in self_drafted.runtime_notes
    drafted = replies(self_drafted, PROMPTS, greedy(TOKENS))
    assert [t for t, _ in drafted] == plain.texts(PROMPTS, TOKENS)
    accepted, rejected = counts(drafted)
    log.warning("self draft: %d accepted, %d rejected over %d prompts", accepted, rejected,
                len(PROMPTS))
    assert accepted > 4 * rejected, (accepted, rejected)
    assert all(u.accepted_prediction_tokens for _, u in drafted), "a reply took no draft"


def test_a_draft_model_that_guesses_badly_changes_no_text(noise_drafted, plain):
    assert "drafts from noise" in noise_drafted.runtime_notes
    drafted = replies(noise_drafted, NOISY_PROMPTS, greedy(TOKENS))
    assert [t for t, _ in drafted] == plain.texts(NOISY_PROMPTS, TOKENS)
    accepted, rejected = counts(drafted)
    log.warning("noise draft: %d accepted, %d rejected", accepted, rejected)
    assert rejected > accepted, (accepted, rejected)


def test_seeded_sampling_gives_the_same_text_with_a_draft_model(self_drafted, plain):
    prompts = QUOTING[:1] + OTHERS[1:2]
    params = GenParams(SamplingSettings(temperature=0.8, top_p=0.95, top_k=40,
                                        repetition_penalty=1.1, max_new_tokens=TOKENS,
                                        seed=11))
    drafted = replies(self_drafted, prompts, params)
    assert [t for t, _ in drafted] == [t for t, _ in replies(plain.backend, prompts, params)]
    assert counts(drafted)[0] > 0, "no draft was accepted: the comparison proved nothing"


def test_a_draft_model_of_another_tokenizer_is_refused_naming_both(smollm2_path, noise_gguf,
                                                                   tmp_path):
    other = random_llama(smollm2_path, tmp_path / "other.gguf", swap=(1000, 1001))
    backend = LlamaCppBackend(smollm2_path, context_length=CONTEXT, parallel=1,
                              draft=DraftSpec(other, "other-vocab", "smollm2"))
    with pytest.raises(BackendError) as refused:
        backend.load()
    message = str(refused.value)
    assert "\n" not in message
    assert "draft model other-vocab does not share the tokenizer of smollm2" in message
    assert "token 1000 is" in message, message
    assert backend._model is None and backend._ctx is None  # nothing held after the refusal


def test_replies_decoding_together_share_the_draft_context_and_keep_their_text(
        self_drafted, plain):
    """Two at once share steps (and make no drafts while they do) and keep their text; the
    one draft context serves whichever reply is left alone."""
    prompts = [QUOTING[3], OTHERS[1]]  # replies alone above: their plain text is known
    results: list = [None, None]

    def one(index: int) -> None:
        chunks = list(self_drafted.stream_chat([Message("user", prompts[index])],
                                               greedy(TOKENS), threading.Event()))
        results[index] = ("".join(c.text for c in chunks), chunks[-1].usage)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert None not in results, "a reply never finished"
    assert self_drafted._decoder.widest >= 2, "the replies never shared a step"
    assert [t for t, _ in results] == plain.texts(prompts, TOKENS)
