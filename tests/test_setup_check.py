"""setup_check.py, README's first step: without a C/C++ compiler the install stops in one
sentence naming the package to install, before pip's wall of CMake errors; with one, or
where no build happens, it passes silently."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import setup_check  # a script at the project's root, importable as the tests' package is
from tests.conftest import ROOT

SCRIPT = ROOT / "setup_check.py"


def run_check(tmp_path: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    """The check as README runs it, against an empty virtualenv folder and with `path` as
    PATH; the compiler settings and pip's index are only those given."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CC", "CXX", "PIP_EXTRA_INDEX_URL", "PATH")}
    return subprocess.run([sys.executable, str(SCRIPT), "--venv", str(tmp_path / ".venv")],
                          env={**clean, "PATH": path, **env}, capture_output=True, text=True,
                          timeout=60)


def stub_compilers(folder: Path, *names: str) -> str:
    """A folder on PATH holding programs with the compilers' names."""
    folder.mkdir()
    for name in names:
        program = folder / name
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o755)
    return str(folder)


def one_sentence(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"more than one line: {text!r}"
    assert "Traceback" not in text and "CMAKE" not in text
    assert len(re.findall(r"\.(?:\s|$)", lines[0])) == 1, f"more than one sentence: {text!r}"
    return lines[0]


@pytest.mark.skipif(sys.platform != "linux", reason="PATH-based compiler lookup is Linux's")
def test_without_a_compiler_on_path_the_check_stops_in_one_sentence_naming_the_package(
        tmp_path):
    result = run_check(tmp_path, str(tmp_path / "empty"))
    assert result.returncode == 1, result.stderr
    message = one_sentence(result.stderr)
    assert "No C/C++ compiler found" in message
    assert setup_check._compiler_package("linux") in message  # build-essential on Debian
    assert setup_check.PREBUILT_INDEX in message  # and the way around the build
    assert result.stdout == ""


@pytest.mark.skipif(sys.platform != "linux", reason="PATH-based compiler lookup is Linux's")
def test_cc_and_cxx_pointing_nowhere_are_named(tmp_path):
    compilers = stub_compilers(tmp_path / "bin", "cc", "c++")
    result = run_check(tmp_path, compilers, CC=str(tmp_path / "nowhere/cc"),
                       CXX="nowhere-c++ -O2")
    assert result.returncode == 1
    message = one_sentence(result.stderr)
    assert f"CC={tmp_path / 'nowhere/cc'} names no program" in message
    assert "CXX=nowhere-c++ -O2 names no program" in message


@pytest.mark.skipif(sys.platform != "linux", reason="PATH-based compiler lookup is Linux's")
def test_a_c_compiler_without_a_cxx_compiler_is_named(tmp_path):
    result = run_check(tmp_path, stub_compilers(tmp_path / "bin", "gcc"))
    assert result.returncode == 1
    assert "No C++ compiler found" in one_sentence(result.stderr)


@pytest.mark.skipif(sys.platform != "linux", reason="PATH-based compiler lookup is Linux's")
def test_with_a_compiler_present_the_check_passes_silently(tmp_path):
    result = run_check(tmp_path, stub_compilers(tmp_path / "bin", "cc", "c++"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    result = run_check(tmp_path, str(tmp_path / "empty"), CC=str(tmp_path / "bin" / "cc"),
                       CXX=f"{tmp_path / 'bin' / 'c++'} -O2")
    assert (result.returncode, result.stderr) == (0, "")


def test_the_machines_own_compilers_pass(tmp_path):
    missing = setup_check._missing_compiler(dict(os.environ), sys.platform)
    assert not missing, f"this machine has no C/C++ compiler, which the install needs: {missing}"
    result = run_check(tmp_path, os.environ.get("PATH", os.defpath))
    assert (result.returncode, result.stderr) == (0, "")


def test_no_compiler_is_needed_with_the_prebuilt_wheels_or_an_installed_engine(tmp_path):
    empty = str(tmp_path / "empty")
    prebuilt = run_check(tmp_path, empty,
                         PIP_EXTRA_INDEX_URL=f"https://{setup_check.PREBUILT_INDEX}")
    assert (prebuilt.returncode, prebuilt.stderr) == (0, "")
    (tmp_path / ".venv/lib/python3.11/site-packages/llama_cpp_python-0.3.36.dist-info").mkdir(
        parents=True)
    installed = run_check(tmp_path, empty)
    assert (installed.returncode, installed.stderr) == (0, "")


def test_an_old_python_is_named_with_the_version_needed():
    with pytest.raises(setup_check.SetupProblem, match=r"Python 3\.11 or newer .* this is 3\.10"):
        setup_check.check(Path("/nonexistent/.venv"), {}, "linux", (3, 10))


def test_readme_and_ci_run_the_check_before_pip():
    """README's install command stays one command, and CI installs the same way."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^>? ?(python3 setup_check\.py && python3 -m venv .*)$", readme,
                          re.M)
    assert commands, "README's install command does not start with the check"
    assert all("&& .venv/bin/pip install -r requirements.txt && .venv/bin/python chat_app.py"
               in command for command in commands)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.index("python3 setup_check.py") < ci.index("pip install")
