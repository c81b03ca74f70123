"""Values from outside (an origin's headers, a catalog row, an operator's option) made safe to
store, to send in a response header, and to log.

An origin is not trusted to send well-formed headers, and a catalog row may have been written by
something other than this host (a damaged or hostile data dir). What the host repeats of either
is checked here, once when it is stored and again when it is sent.
"""

from __future__ import annotations

import re

# A bound on what is stored and sent; real media types, parameters and all, are far shorter.
MAX_MEDIA_TYPE = 255
OCTET_STREAM = "application/octet-stream"
# Most characters of an error text kept for the operator (a failed job's reason, a log line).
ERROR_TEXT = 500

# RFC 9110 section 5.6.2 (token), 5.6.4 (quoted-string, printable ASCII only: no HTAB, no
# obs-text) and 8.3.1 (media-type = type "/" subtype *( OWS ";" OWS [ parameter ] )), with
# spaces only for OWS. Possessive quantifiers throughout: the grammar never needs to give back
# what a repetition took, and with backtracking a run of "; ; ; ;" takes exponential time.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_QUOTED = r'"(?:[ !#-\[\]-~]|\\[ -~])*+"'
_PARAMETER = rf"{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?: *+;(?: *+{_PARAMETER})?+)*+")


def sanitise_media_type(value: str | None) -> str | None:
    """value without surrounding spaces if it is a media type as RFC 9110 writes one (type,
    subtype, parameters; printable ASCII; at most MAX_MEDIA_TYPE characters), else None."""
    if value is None:
        return None
    value = value.strip(" ")
    if len(value) > MAX_MEDIA_TYPE or not _MEDIA_TYPE.fullmatch(value):
        return None
    return value


def printable(text: str, limit: int = 200) -> str:
    """text for a log line or an error message: what is not printable (control characters and
    so terminal escapes, line breaks, format characters such as bidi overrides) as '?', at most
    limit characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
