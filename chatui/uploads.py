"""Uploaded files are read once and then deleted: the app keeps what it took from them (an
attachment's text, an imported conversation or prompt set) in its store, never the file.

Gradio writes every upload to its cache folder and would keep it there until the machine
clears its temporary files, readable by anyone who learns its path; a person who deletes
the conversation would still leave the original behind.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from gradio.utils import get_upload_folder

log = logging.getLogger(__name__)


def discard_uploads(paths: Iterable[str | Path | None]) -> None:
    """Delete uploaded files (and the folder Gradio made for each, once empty). Paths
    outside Gradio's upload folder are left alone: a handler called by hand with a server
    path must not become a way to delete files."""
    folder = Path(get_upload_folder()).resolve()
    for path in paths:
        if not path:
            continue
        path = Path(path).resolve()
        if not path.is_relative_to(folder) or path == folder:
            continue
        try:
            path.unlink(missing_ok=True)
            if path.parent != folder and not any(path.parent.iterdir()):
                path.parent.rmdir()
        except OSError as exc:  # another request's upload of the same bytes, say
            log.debug("could not delete the upload %s: %s", path, exc)
