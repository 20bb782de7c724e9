"""The library's refusals, for a person. Their own module because both halves of the
library raise them: chatcore/library/model_library.py (the registry file) and chatcore/library/library_hub.py (the
Hub side it builds on), and the one imports the other."""
from __future__ import annotations


class LibraryError(Exception):
    """A library change was refused; the message says why, for a person."""


class NotAllowed(LibraryError):
    """The signed-in user may look at the library but not change it."""
