"""Sign-in users for --auth, read from a file or the environment rather than the command line.

A process's arguments are readable by every local user (`ps`, /proc/PID/cmdline), so
passwords given with `--auth` leak to anyone with a shell on the machine. `--auth-file`
(one USER:PASSWORD per line) and the LOCAL_CHAT_AUTH variable (visible only to the same
user and root) keep them out; `--auth` still works, with a warning.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

AUTH_ENV = "LOCAL_CHAT_AUTH"
MAX_AUTH_FILE_BYTES = 64 * 1024  # far more than any list of users; bounds a wrong path


class CredentialsError(ValueError):
    """The users given for sign-in cannot be used; says where and why."""


@dataclass(frozen=True)
class Credentials:
    """The users who may sign in, and warnings about how they were given."""

    users: list[tuple[str, str]] | None
    warnings: list[str] = field(default_factory=list)


def parse_users(text: str, where: str = "--auth") -> list[tuple[str, str]]:
    """`alice:secret,bob:hunter2` -> [("alice", "secret"), ("bob", "hunter2")]."""
    pairs = [_pair(item, where) for item in text.split(",")]
    _check_unique(pairs, where)
    return pairs


def read_auth_file(path: Path) -> Credentials:
    """One USER:PASSWORD per line; blank lines and lines starting with # are skipped. A
    password may hold ':' and ',' here (only the first ':' splits)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise CredentialsError(f"--auth-file {path}: not a regular file")
        if info.st_size > MAX_AUTH_FILE_BYTES:
            raise CredentialsError(f"--auth-file {path}: {info.st_size} bytes is too large "
                                   f"for a list of users (at most {MAX_AUTH_FILE_BYTES})")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"--auth-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise CredentialsError(f"--auth-file {path}: {exc.strerror or exc}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            pairs.append(_pair(line, f"--auth-file {path}, line {number}"))
    if not pairs:
        raise CredentialsError(f"--auth-file {path}: no USER:PASSWORD line")
    _check_unique(pairs, f"--auth-file {path}")
    warnings = []
    if info.st_mode & 0o077:
        warnings.append(f"--auth-file {path} can be read by other users of this machine "
                        f"(mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it")
    return Credentials(pairs, warnings)


def resolve(flag: str | None, auth_file: Path | None,
            environ: Mapping[str, str] = os.environ) -> Credentials:
    """The sign-in users from --auth, --auth-file or $LOCAL_CHAT_AUTH (in that order of
    precedence; giving both flags is an error); None when none of them is set."""
    if flag and auth_file is not None:
        raise CredentialsError("--auth and --auth-file both name the users: give one")
    if auth_file is not None:
        return read_auth_file(auth_file)
    if flag:
        return Credentials(parse_users(flag), [
            "--auth puts passwords on the command line, where every user of this machine "
            f"can read them (ps, /proc): use --auth-file PATH or ${AUTH_ENV} instead"])
    if text := environ.get(AUTH_ENV, "").strip():
        return Credentials(parse_users(text, f"${AUTH_ENV}"))
    return Credentials(None)


def _pair(item: str, where: str) -> tuple[str, str]:
    user, sep, password = item.partition(":")
    if not sep or not user.strip() or not password:
        shown = f"{user.strip()}:…" if sep else "an entry without ':'"
        raise CredentialsError(f"{where}: {shown} is not USER:PASSWORD")
    return user.strip(), password


def _check_unique(pairs: list[tuple[str, str]], where: str) -> None:
    seen = set()
    for user, _ in pairs:
        if user in seen:
            raise CredentialsError(f"{where}: the user {user!r} is named twice")
        seen.add(user)
