"""The command line: one-shot replies on stdout, clean failures, the model list."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import CAPITAL_PROMPT, ROOT, refuse_in_the_fast_tier


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    refuse_in_the_fast_tier("runs chat_app.py")
    return subprocess.run([sys.executable, str(ROOT / "chat_app.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.slow
def test_one_shot_streams_the_reply_to_stdout(smollm2_path):
    result = run_cli("--model", "smollm2-135m", "--prompt", CAPITAL_PROMPT,
                     "--temperature", "0", "--max-new-tokens", "40")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    # Only the app's own lines (warnings about the registry, say): none of llama.cpp's.
    own = ("warning: ", "note: ")
    assert [line for line in result.stderr.splitlines() if not line.startswith(own)] == []


@pytest.mark.slow
def test_one_shot_system_prompt_and_seed_are_used(smollm2_path):
    args = ("--prompt", "Tell me a joke.", "--temperature", "1.0", "--seed", "7",
            "--max-new-tokens", "30")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    french = run_cli("--prompt", CAPITAL_PROMPT, "--system", "Answer in French only.",
                     "--temperature", "0", "--max-new-tokens", "40")
    plain = run_cli("--prompt", CAPITAL_PROMPT, "--temperature", "0", "--max-new-tokens", "40")
    assert french.stdout != plain.stdout


@pytest.mark.slow
def test_unknown_model_id_exits_non_zero_with_one_line():
    result = run_cli("--model", "no-such-model", "--prompt", "hi")
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown model id 'no-such-model'; known ids: "
                               "smollm2-135m, smollm2-135m-4bit, llama-3.1-8b-instruct-q4")


@pytest.mark.slow
def test_model_that_cannot_load_exits_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - {{id: broken, backend: llamacpp, path: '{bad}'}}\n")
    result = run_cli("--models", str(models), "--prompt", "hi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: broken: cannot read the GGUF header of {bad}")


@pytest.mark.slow
def test_model_not_downloaded_exits_non_zero_and_names_what_it_expects():
    result = run_cli("--model", "llama-3.1-8b-instruct-q4", "--prompt", "hi")
    assert result.returncode == 1
    assert "not downloaded" in result.stderr
    assert "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF" in result.stderr


@pytest.mark.slow
def test_list_models_prints_backend_and_state(smollm2_path):
    result = run_cli("--list-models")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["smollm2-135m", "llamacpp", "available"]
    assert any(line.startswith("falcon-7b-instruct-q4") and "not downloaded" in line
               for line in lines)
    rows = {line.split()[0]: line.split()[1:3] for line in lines}
    assert rows["smollm2-135m-4bit"] == ["transformers", "available"]
    assert rows["mistral-7b-instruct-v0.3-4bit"][0] == "transformers"
    assert "mistralai/Mistral-7B-Instruct-v0.3" in result.stdout


@pytest.mark.slow
def test_help_explains_every_flag():
    result = run_cli("--help")
    for flag in ("--models", "--host", "--port", "--model", "--offline", "--log-level",
                 "--prompt", "--system", "--temperature", "--max-new-tokens", "--seed",
                 "--list-models", "--allow-download", "--data-dir", "--auth", "--max-memory",
                 "--api-key", "--allowed-hosts", "--cors-origin"):
        assert flag in result.stdout
    assert "127.0.0.1" in result.stdout


@pytest.mark.slow
def test_a_host_beyond_loopback_needs_an_api_key_or_sign_in(tmp_path):
    result = run_cli("--host", "0.0.0.0", "--data-dir", str(tmp_path), "--no-browser")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --host 0.0.0.0 opens the API to other machines: "
                                     "give it a key with --api-key or $LOCAL_CHAT_API_KEY, "
                                     "or require sign-in with --auth")


@pytest.mark.slow
def test_unusable_allowed_hosts_and_cors_origins_are_one_line(tmp_path):
    for flag, value in (("--allowed-hosts", "http://chat.lan"), ("--cors-origin", "*")):
        result = run_cli(flag, value, "--data-dir", str(tmp_path), "--no-browser")
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: {flag}: {value!r} is not"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), "--data-dir", str(tmp_path), "--no-browser")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: could not serve on 127.0.0.1:{port}: Address "
                                     "already in use (pass another port with --port)")
