"""What the install needs, checked before pip starts: pip builds llama-cpp-python from
source, and without a C/C++ compiler that ends in pages of CMake errors. This says what is
missing in one sentence, naming the package to install, and exits 1; it passes silently.

    python3 setup_check.py            # README's first command runs it before pip

Standard library only: it runs on the system's python3, before there is a virtualenv.
A compiler is not needed where llama-cpp-python is already in the virtualenv, or where pip
is told to take the prebuilt CPU wheels (PIP_EXTRA_INDEX_URL naming PREBUILT_INDEX).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 11)
PREBUILT_INDEX = "abetlen.github.io/llama-cpp-python/whl/cpu"
# The package that brings a C and a C++ compiler, by the distribution's ID in os-release.
LINUX_PACKAGES = {"debian": "build-essential (sudo apt install build-essential)",
                  "fedora": "gcc and gcc-c++ (sudo dnf install gcc gcc-c++)",
                  "rhel": "gcc and gcc-c++ (sudo dnf install gcc gcc-c++)",
                  "arch": "base-devel (sudo pacman -S base-devel)",
                  "suse": "gcc and gcc-c++ (sudo zypper install gcc gcc-c++)"}
MACOS_PACKAGE = "the Xcode Command Line Tools (xcode-select --install)"
WINDOWS_PACKAGE = ("Visual Studio Build Tools with the \"Desktop development with C++\" "
                   "workload")


class SetupProblem(Exception):
    """Something the install needs is missing; the message names what to install."""


def check(venv: Path, environ: dict[str, str], platform: str = sys.platform,
          version: tuple[int, int] = sys.version_info[:2]) -> None:
    """Raise SetupProblem for the first thing the install would fail on."""
    if version < MIN_PYTHON:
        raise SetupProblem(
            f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer is needed and this is "
            f"{version[0]}.{version[1]}: install python{MIN_PYTHON[0]}.{MIN_PYTHON[1]} and "
            "run the command with it instead of python3.")
    if platform == "linux" and not _has_venv():
        raise SetupProblem("Python's venv module cannot make a virtualenv here: install "
                           "python3-venv (sudo apt install python3-venv).")
    if _llama_cpp_installed(venv) or PREBUILT_INDEX in environ.get("PIP_EXTRA_INDEX_URL", ""):
        return
    missing = _missing_compiler(environ, platform)
    if missing:
        raise SetupProblem(
            f"No {missing} found, and pip builds llama-cpp-python from source: install "
            f"{_compiler_package(platform)}, or take the prebuilt CPU wheels with "
            f"PIP_EXTRA_INDEX_URL=https://{PREBUILT_INDEX} (README, Set-up).")


def _has_venv() -> bool:
    """Debian and Ubuntu ship python3 without ensurepip, which venv needs for pip."""
    try:
        import ensurepip  # noqa: F401
    except ImportError:
        return False
    return True


def _llama_cpp_installed(venv: Path) -> bool:
    site = [*venv.glob("lib/python3*/site-packages"), venv / "Lib" / "site-packages"]
    return any(any(path.glob("llama_cpp_python-*.dist-info")) for path in site)


def _missing_compiler(environ: dict[str, str], platform: str) -> str | None:
    """Which compiler CMake would not find ('C compiler', 'C++ compiler', 'C/C++ compiler',
    with the CC/CXX setting that names no program), or None."""
    if platform == "win32":
        return None if shutil.which("cl") or _visual_studio_has_cpp(environ) else \
            "C/C++ compiler"
    if platform == "darwin" and not _xcode_tools():
        return "C/C++ compiler"
    wrong = [f"{var}={environ[var]} names no program" for var in ("CC", "CXX")
             if environ.get(var) and not _found(environ[var], (), environ)]
    has_c = _found(environ.get("CC"), ("cc", "gcc", "clang"), environ)
    has_cxx = _found(environ.get("CXX"), ("c++", "g++", "clang++"), environ)
    if has_c and has_cxx:
        return None
    what = "C++ compiler" if has_c else "C compiler" if has_cxx else "C/C++ compiler"
    return f"{what} ({', '.join(wrong)})" if wrong else what


def _found(chosen: str | None, names: tuple[str, ...], environ: dict[str, str]) -> bool:
    """CMake takes CC/CXX when set (a path or a name, maybe with flags), else looks on PATH."""
    path = environ.get("PATH", os.defpath)
    if chosen:
        return shutil.which(chosen.split()[0], path=path) is not None
    return any(shutil.which(name, path=path) for name in names)


def _xcode_tools() -> bool:
    """macOS's /usr/bin/cc exists even without the tools: it only offers to install them."""
    try:
        return subprocess.run(["xcode-select", "-p"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _visual_studio_has_cpp(environ: dict[str, str]) -> bool:
    vswhere = (Path(environ.get("ProgramFiles(x86)", r"C:\Program Files (x86)"))
               / "Microsoft Visual Studio" / "Installer" / "vswhere.exe")
    try:
        found = subprocess.run(
            [str(vswhere), "-latest", "-products", "*", "-requires",
             "Microsoft.VisualStudio.Component.VC.Tools.x86.x64", "-property",
             "installationPath"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and bool(found.stdout.strip())


def _compiler_package(platform: str) -> str:
    if platform == "darwin":
        return MACOS_PACKAGE
    if platform == "win32":
        return WINDOWS_PACKAGE
    return LINUX_PACKAGES.get(_distribution(), "your distribution's gcc and g++ packages")


def _distribution() -> str:
    """The os-release ID this distribution is, or is like (ubuntu is like debian)."""
    try:
        release = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return ""
    fields = dict(line.split("=", 1) for line in release.splitlines() if "=" in line)
    ids = [fields.get("ID", "")] + fields.get("ID_LIKE", "").split()
    return next((i.strip('"') for i in ids if i.strip('"') in LINUX_PACKAGES), "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(__file__).resolve().parent / ".venv",
                        help="the virtualenv the install goes into (default: .venv here)")
    args = parser.parse_args(argv)
    try:
        check(args.venv, dict(os.environ))
    except SetupProblem as problem:
        print(f"setup_check: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
