"""What a probe found by trying, remembered per machine in a small JSON file (the AMX and
KV cache probes: backends/amx_probe.py, backends/kv_probe.py), so it is found only once."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def read_answers(cache_file: Path, probe: str) -> dict:
    """The remembered answers; an unreadable or corrupt file counts as none (it is
    rewritten after the next probe). `probe` names it in the log ("AMX", "KV")."""
    try:
        answers = json.loads(cache_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("ignoring the %s probe cache %s: %s", probe, cache_file, error)
        return {}
    if not isinstance(answers, dict):
        log.warning("ignoring the %s probe cache %s: not a JSON object", probe, cache_file)
        return {}
    return answers


def write_answers(cache_file: Path, answers: dict, probe: str) -> None:
    """Write atomically, so a reader never sees half a file; a failure costs only a probe
    next time."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=cache_file.parent,
                                         prefix=cache_file.name, suffix=".tmp",
                                         delete=False) as temp:
            json.dump(answers, temp, indent=2, sort_keys=True)
        os.replace(temp.name, cache_file)
    except OSError as error:
        log.warning("could not remember the %s probe's answer in %s: %s", probe, cache_file,
                    error)
