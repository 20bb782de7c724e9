"""Which KV cache type `kv_cache: auto` means on this machine, found by measuring.

At long contexts decoding on the CPU is bound by the bytes read per token, the KV cache a
growing share of them: a smaller cache type may decode faster, or slower where its
dequantizing kernels cost more than the bytes saved (the project's bench has seen q8_0 at
2.28x f16 after 1,490 tokens in one run and 0.87x in another, on one kind of machine). So
the first load of an `auto` entry on a machine starts a child process
(`backends/kv_measure.py`) in the background (`backends/kv_background.py`: no load waits
for it; they use f16 until it answers), which decodes a few tokens after a long prompt
with each candidate type, and the type is remembered per
CPU model, kernel release and llama-cpp-python version, as the AMX probe is
(`backends/amx_probe.py`). Only paths with flash attention on are candidates: it is what
keeps a greedy reply decoded in a batch the same as one decoded alone, and quantized V
caches need it anyway. q4_0 is not a candidate: it costs answers quality, so it is for an
entry to ask for. `LOCAL_CHAT_KV_CACHE=f16|q8_0|q4_0` skips the probe (`auto` probes).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.amx_probe import cpu_model, llama_cpp_version, smollm2_gguf
from backends.cores import physical_cores
from backends.notes import Note
from backends.probe_answers import read_answers, write_answers

log = logging.getLogger(__name__)

ENV = "LOCAL_CHAT_KV_CACHE"
TYPES = ("f16", "q8_0", "q4_0")
CANDIDATES = ("f16", "q8_0")  # most exact first; see the module docstring for q4_0
PROMPT_TOKENS = 1000
DECODE_TOKENS = 16
# A smaller type is taken only when it decodes at least this much faster than the more
# exact one: run-to-run noise on a shared machine must not trade exactness for nothing.
MARGIN = 1.10
# The child's limit: a measurement in the background (nice 19) on a busy machine is slow,
# and nothing waits for it.
TIMEOUT_S = 300.0
BUSY_SHARE = 0.5  # a timed-out child that had less CPU than this share of one core was starved
ROOT = Path(__file__).resolve().parent.parent


class KvSettingError(ValueError):
    """LOCAL_CHAT_KV_CACHE holds a value other than auto, f16, q8_0 or q4_0."""


@dataclass(frozen=True)
class KvChoice:
    """The KV cache type an `auto` entry gets, and why."""

    kv_cache: str  # f16, q8_0 or q4_0
    reason: Note  # "1.8x faster than f16 at 1,000 tokens on this CPU (measured)", ...
    flash_attention: str = "on"  # on or off: the path the type was chosen for
    pending: bool = False  # f16 until a measurement in the background answers

    def describe(self) -> Note:
        """The Models tab's line: "KV cache q8_0, flash attention on: <reason>"."""
        if self.pending:
            return Note(f"KV cache {self.kv_cache} for now: {self.reason}",
                        "models.kv.for_now", kv=self.kv_cache, reason=self.reason)
        return Note(f"KV cache {self.kv_cache}, flash attention {self.flash_attention}: "
                    f"{self.reason}", f"models.kv.path_{self.flash_attention}",
                    kv=self.kv_cache, reason=self.reason)


NO_MODEL = KvChoice("f16", Note("no model to measure the KV cache with: pip install -r "
                                "requirements.txt brings SmolLM2", "models.kv.no_model"))

NOT_STARTED = KvChoice("f16", Note("the KV probe could not start", "models.kv.not_started"))


def decide(rates: Mapping[str, float], prompt_tokens: int = PROMPT_TOKENS,
           margin: float = MARGIN) -> KvChoice:
    """The most exact candidate that no less exact one beats by `margin` (tokens/s per type
    from the child). Pure, so the rule is tested with made-up measurements."""
    measured = {kv: rate for kv, rate in rates.items()
                if kv in TYPES and isinstance(rate, (int, float)) and rate > 0}
    if "f16" not in measured:
        return KvChoice("f16", Note("the KV probe measured nothing", "models.kv.nothing"))
    choice = "f16"
    for kv in (t for t in TYPES if t != "f16" and t in measured):
        if measured[kv] >= measured[choice] * margin:
            choice = kv
    tokens = f"{prompt_tokens:,}"
    if choice == "f16":
        others = [kv for kv in measured if kv != "f16"]
        if not others:
            return KvChoice("f16", Note("only f16 was measured", "models.kv.only_f16"))
        best = max(others, key=measured.__getitem__)
        ratio = f"{measured[best] / measured['f16']:.2f}"
        return KvChoice("f16", Note(f"{best} was not faster at {tokens} tokens on this CPU "
                                    f"({ratio}x f16, measured)", "models.kv.not_faster",
                                    other=best, tokens=tokens, ratio=ratio))
    ratio = f"{measured[choice] / measured['f16']:.1f}"
    return KvChoice(choice, Note(f"{ratio}x faster than f16 at {tokens} tokens on this CPU "
                                 "(measured)", "models.kv.faster", ratio=ratio, tokens=tokens))


def setting_from_env(setting: str | None = None) -> str:
    """auto, f16, q8_0 or q4_0 from `setting` or $LOCAL_CHAT_KV_CACHE; KvSettingError else."""
    raw = os.environ.get(ENV, "") if setting is None else setting
    value = raw.strip().lower() or "auto"
    if value not in ("auto", *TYPES):
        raise KvSettingError(f"{ENV}={raw!r} is not a valid setting: use auto (measure once "
                             f"per machine) or one of {', '.join(TYPES)}")
    return value


def default_cache_file() -> Path:
    """Where the answers are remembered: beside the AMX probe's."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("local-chat")) / "kv-probe.json"


def machine_key() -> str:
    return f"{cpu_model()}|{platform.release()}|{llama_cpp_version()}"


def settled(flash_attention: str, on_cpu: bool, setting: str | None = None) -> KvChoice | None:
    """The choice when no measurement is needed (flash attention off, layers on a GPU, the
    environment variable), else None."""
    if flash_attention == "off":
        return KvChoice("f16", Note("flash attention is off, and a quantized cache needs it",
                                    "models.kv.flash_off"), "off")
    if not on_cpu:
        return KvChoice("f16", Note("measured only for decoding on the CPU",
                                    "models.kv.not_cpu"))
    value = setting_from_env(setting)
    if value != "auto":
        return KvChoice(value, Note(f"{ENV}={value}", "models.kv.setting", name=ENV,
                                    value=value))
    return None


def remembered(cache_file: Path | None = None) -> KvChoice | None:
    """This machine's remembered answer, without measuring (the planner's question)."""
    cache_file = default_cache_file() if cache_file is None else Path(cache_file)
    entry = read_answers(cache_file, "KV").get(machine_key())
    if not isinstance(entry, dict):
        return None
    kv, reason, key = entry.get("kv_cache"), entry.get("reason"), entry.get("reason_key")
    params, probed = entry.get("reason_params"), entry.get("probed")
    if kv not in TYPES or not isinstance(reason, str) or not isinstance(key, str) \
            or not isinstance(params, dict) or not isinstance(probed, str):
        return None
    note = Note(reason, key, **{name: str(value) for name, value in params.items()})
    return KvChoice(kv, Note(f"{note} on {probed} (remembered)", "models.kv.remembered_on",
                             reason=note, date=probed))


def planned_kv_cache(flash_attention: str = "auto", on_cpu: bool = True,
                     cache_file: Path | None = None) -> str:
    """The type the planner charges an `auto` entry for before it loads: the settled or
    remembered one, else f16, the largest (an estimate may be high, never low)."""
    try:
        choice = settled(flash_attention, on_cpu) or remembered(cache_file)
    except KvSettingError:
        choice = None  # the load says what is wrong with the variable
    return choice.kv_cache if choice else "f16"


def measure_command(probe_model: Path | None = None,
                    extra_buffers: bool = True) -> list[str] | None:
    """The child's command line: SmolLM2 when installed (cheapest), else `probe_model`;
    None when there is no model to measure with."""
    model = smollm2_gguf() or probe_model
    if model is None:
        return None
    return [sys.executable, "-m", "backends.kv_measure", str(model),
            "--types", ",".join(CANDIDATES), "--prompt", str(PROMPT_TOKENS),
            "--decode", str(DECODE_TOKENS), "--threads", str(physical_cores()),
            *([] if extra_buffers else ["--plain"])]


def choose_kv_cache(flash_attention: str = "auto", on_cpu: bool = True,
                    probe_model: Path | None = None, extra_buffers: bool = True,
                    cache_file: Path | None = None, setting: str | None = None,
                    probe_command: Sequence[str] | None = None,
                    timeout_s: float = TIMEOUT_S) -> KvChoice:
    """Settle `auto` now: settled, else remembered, else measured in a child and remembered.

    The waiting way, for the bench (the app's loads never wait: backends/kv_background.py).
    `probe_command` replaces the child's command line (tests). Raises KvSettingError for a
    bad variable."""
    if (choice := settled(flash_attention, on_cpu, setting)) is not None:
        return choice
    cache_file = default_cache_file() if cache_file is None else Path(cache_file)
    if (choice := remembered(cache_file)) is not None:
        return choice
    if probe_command is None:
        probe_command = measure_command(probe_model, extra_buffers)
    if probe_command is None:
        return NO_MODEL
    return measure_and_remember(list(probe_command), cache_file, timeout_s)


def measure_and_remember(command: Sequence[str], cache_file: Path, timeout_s: float = TIMEOUT_S,
                         low_priority: bool = False) -> KvChoice:
    """Run the child once, decide, and remember the answer unless it says nothing about
    this machine (the child could not start, or it timed out while the machine was busy)."""
    choice, keep = _probe(list(command), timeout_s, low_priority)
    if keep:
        answers = read_answers(cache_file, "KV")
        answers[machine_key()] = {"kv_cache": choice.kv_cache, "reason": str(choice.reason),
                                  "reason_key": choice.reason.key,
                                  "reason_params": dict(choice.reason.params),
                                  "probed": datetime.date.today().isoformat()}
        write_answers(cache_file, answers, "KV")
    return choice


def _probe(command: list[str], timeout_s: float,
           low_priority: bool = False) -> tuple[KvChoice, bool]:
    """Run the child once and decide; the bool says whether the answer is worth keeping.

    `low_priority` runs it under `nice -n 19`, so a measurement in the background leaves the
    cores to the user's replies (a subprocess preexec_fn is unsafe in a threaded app). A
    timeout is kept only when the child had the CPU (at least BUSY_SHARE of one core on
    average) and still did not finish: this machine is too slow to measure. A child starved
    by other work says nothing about the machine, so a later load measures again."""
    nice = shutil.which("nice") if low_priority else None
    full = [nice, "-n", "19", *command] if nice else command
    log.info("measuring KV cache types in a child process (once on this machine): %s",
             " ".join(full))
    try:
        child = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=ROOT)
    except OSError as error:
        log.warning("the KV probe could not start (%s): f16", error)
        return NOT_STARTED, False
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        cpu_s = _cpu_seconds(child.pid)
        child.kill()
        child.communicate()
        busy = cpu_s is None or cpu_s < BUSY_SHARE * timeout_s
        log.warning("the KV probe did not finish within %g s (%s CPU seconds): f16, %s",
                    timeout_s, "unknown" if cpu_s is None else f"{cpu_s:.1f}",
                    "measured again later (the machine was busy)" if busy else "remembered")
        return KvChoice("f16", Note(f"the KV probe did not finish within {timeout_s:g} s",
                                    "models.kv.timeout", seconds=f"{timeout_s:g}")), not busy
    if nice and child.returncode in (126, 127):  # nice(1): could not run the command
        log.warning("the KV probe could not start: %s", stderr.decode("utf-8", "replace"))
        return NOT_STARTED, False
    if child.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        message = lines[-1] if lines else "no message"
        return KvChoice("f16", Note(f"the KV probe failed (exit {child.returncode}): "
                                    f"{message}", "models.kv.failed",
                                    code=str(child.returncode), message=message)), True
    try:
        rates = json.loads(stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        rates = {}
    choice = decide(rates if isinstance(rates, dict) else {})
    log.info("KV probe measured %s tokens/s: %s", rates, choice.describe())
    return choice, True


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process `pid` has had, all threads (Linux /proc); None
    where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
