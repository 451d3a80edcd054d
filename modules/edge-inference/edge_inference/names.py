"""File names as the file system holds them: raw bytes for file operations, escaped text for ids, logs and JSON.

A Linux file name is any byte string without `/` and NUL; legacy SMB/NFS clients write names that are not
UTF-8 (`caf\\xe9.jpg` in Latin-1). Python hands such a name over as a `str` with the bad bytes as lone
surrogates (`'caf\\udce9.jpg'`, PEP 383), which every `os` call turns back into the same bytes: paths keep
that form, so file operations always touch the real file. Text that leaves the process (a result's
`frame.path`, a log line, the frame id's hash input) uses the two functions here instead:

- `name_bytes(text)`: the bytes of a name (what the file system holds), for hashing; never raises;
- `shown(text)`: the name as valid text, each byte that is not UTF-8 written as `\\xNN` (`caf\\xe9.jpg`).
  Share paths never hold a backslash (the watcher refuses them), so `shown` is unambiguous for them.
A valid UTF-8 name is its own `shown` form, and its `name_bytes` is its UTF-8 encoding (ids are unchanged).
"""

from __future__ import annotations

import os


def name_bytes(text: str) -> bytes:
    """The file-system bytes of `text` (surrogate escapes turned back into their bytes); never raises."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate no file system gave us (e.g. from a JSON `\\ud800`): keep it distinct
        return text.encode("utf-8", "surrogatepass")


def shown(text: str) -> str:
    """`text` as valid Unicode for JSON and logs: bytes that are not UTF-8 become `\\xNN`; never raises."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return name_bytes(text).decode("utf-8", "backslashreplace")
    return text
