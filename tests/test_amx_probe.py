"""The AMX probe: real child processes that crash, fail, hang or pass, and the answer
remembered per machine."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends import amx_probe
from backends.amx_probe import ENV, AmxSettingError, BufferPath, choose_buffers

ROOT = Path(__file__).resolve().parent.parent
SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
PASSES = [sys.executable, "-c", "pass"]


def marker_command(marker: Path) -> list[str]:
    """A probe that passes and leaves `marker` behind: proof that it ran."""
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]


def probe(cache_file: Path, command: list[str], **kwargs) -> BufferPath:
    return choose_buffers(cache_file=cache_file, setting="auto", has_amx=True,
                          probe_command=command, **kwargs)


def test_a_crashing_probe_means_plain_buffers_and_is_remembered(tmp_path):
    cache = tmp_path / "nested" / "dir" / "amx-probe.json"
    first = probe(cache, SIGILL)
    assert first.extra_buffers is False
    assert "SIGILL" in first.reason
    assert first.describe().startswith("plain buffers (")

    marker = tmp_path / "probe-ran"
    second = probe(cache, marker_command(marker))
    assert not marker.exists(), "a remembered answer must not probe again"
    assert second.extra_buffers is False
    assert "SIGILL" in second.reason and "(remembered)" in second.reason
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["extra_buffers"] is False and entry["probed"] in second.reason


def test_a_passing_probe_means_amx_buffers(tmp_path):
    answer = probe(tmp_path / "cache.json", PASSES)
    assert answer == BufferPath(True, "the AMX probe passed")
    assert answer.describe() == "AMX buffers (the AMX probe passed)"


def test_a_failing_probe_reports_its_exit_code_and_last_error_line(tmp_path):
    command = [sys.executable, "-c",
               "import sys; print('noise', file=sys.stderr); "
               "sys.exit('AMX probe: decode returned 1')"]
    answer = probe(tmp_path / "cache.json", command)
    assert answer.extra_buffers is False
    assert answer.reason == "the AMX probe failed (exit 1): AMX probe: decode returned 1"


@pytest.mark.parametrize("part", ["cpu_model", "llama_cpp_version"])
def test_another_cpu_or_llama_cpp_version_probes_again(tmp_path, monkeypatch, part):
    cache = tmp_path / "cache.json"
    assert probe(cache, SIGILL).extra_buffers is False
    monkeypatch.setattr(amx_probe, part, lambda: "something else")
    marker = tmp_path / "probe-ran"
    answer = probe(cache, marker_command(marker))
    assert marker.exists()
    assert answer == BufferPath(True, "the AMX probe passed")
    assert len(json.loads(cache.read_text())) == 2, "both machines' answers are kept"


@pytest.mark.parametrize("setting, extra", [("on", True), ("off", False), (" OFF ", False)])
def test_the_setting_skips_the_probe(tmp_path, setting, extra):
    marker = tmp_path / "probe-ran"
    answer = choose_buffers(cache_file=tmp_path / "cache.json", setting=setting,
                            has_amx=True, probe_command=marker_command(marker))
    assert answer.extra_buffers is extra
    assert ENV in answer.reason
    assert not marker.exists()
    assert not (tmp_path / "cache.json").exists()


def test_the_setting_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "off")
    marker = tmp_path / "probe-ran"
    answer = choose_buffers(cache_file=tmp_path / "cache.json", has_amx=True,
                            probe_command=marker_command(marker))
    assert answer == BufferPath(False, "LOCAL_CHAT_AMX=off")
    assert not marker.exists()


def test_a_bad_setting_names_the_variable_and_the_allowed_values(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(AmxSettingError) as raised:
        choose_buffers(cache_file=tmp_path / "cache.json", has_amx=True, probe_command=SIGILL)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "LOCAL_CHAT_AMX='yes'" in message
    assert all(value in message for value in ("auto", "on", "off"))


def test_a_cpu_without_amx_keeps_the_default_buffers_without_probing(tmp_path):
    marker = tmp_path / "probe-ran"
    answer = choose_buffers(cache_file=tmp_path / "cache.json", setting="auto",
                            has_amx=False, probe_command=marker_command(marker))
    assert answer == BufferPath(True, "this CPU has no AMX")
    assert answer.describe() == "default buffers (this CPU has no AMX)"
    assert not marker.exists()


def test_a_hanging_probe_is_killed_and_counts_as_failed(tmp_path):
    answer = probe(tmp_path / "cache.json", [sys.executable, "-c",
                                             "import time; time.sleep(30)"], timeout_s=1)
    assert answer.extra_buffers is False
    assert answer.reason == "the AMX probe did not finish within 1 s"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_corrupt_cache_file_is_ignored_and_replaced(tmp_path, content):
    cache = tmp_path / "cache.json"
    cache.write_text(content)
    answer = probe(cache, SIGILL)
    assert answer.extra_buffers is False and "(remembered)" not in answer.reason
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["extra_buffers"] is False and "SIGILL" in entry["reason"]
    assert [path.name for path in tmp_path.iterdir()] == ["cache.json"], "no temp file left"


def test_without_a_model_to_probe_with_plain_buffers_are_used(tmp_path, monkeypatch):
    monkeypatch.setattr(amx_probe, "smollm2_gguf", lambda: None)
    answer = choose_buffers(cache_file=tmp_path / "cache.json", setting="auto", has_amx=True)
    assert answer.extra_buffers is False
    assert "no model to probe" in answer.reason and "requirements.txt" in answer.reason
    assert not (tmp_path / "cache.json").exists()


@pytest.mark.slow
def test_the_real_probe_agrees_with_running_the_child(tmp_path, smollm2_path):
    assert amx_probe.smollm2_gguf() == smollm2_path
    answer = choose_buffers(cache_file=tmp_path / "cache.json", setting="auto", has_amx=True)
    child = subprocess.run([sys.executable, "-m", "backends.amx_probe", str(smollm2_path)],
                           cwd=ROOT, capture_output=True, timeout=120)
    assert answer.extra_buffers == (child.returncode == 0), (answer, child.returncode,
                                                              child.stderr[-2000:])
