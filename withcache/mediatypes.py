"""Which Content-Type the read path may serve a stored artifact with.

An artifact's type is whatever its origin sent, and the read path serves it from the same origin
as the operator UI. A type a browser renders as a document that runs code (HTML, XHTML, SVG and
other XML, XSLT, multipart/x-mixed-replace), or that a page of this origin could load as a
script or a stylesheet, is served as application/octet-stream instead: a browser then downloads
the bytes (nosniff stops it guessing) and curl and wget write the same file as before. The read
path's `Content-Security-Policy: sandbox` is the first defence; this is the second, for browsers
that ignore it.

text/css is on the list too. A stylesheet runs no script, but the operator pages allow
`style-src 'self'`, so CSS served from this origin is CSS those pages would load if ever an HTML
injection slipped into them, and attribute selectors can leak a page's CSRF token. The same
reasoning covers JavaScript and `script-src 'self'`.
"""

from __future__ import annotations

from withcache.sanitise import OCTET_STREAM, sanitise_media_type

# WHATWG's JavaScript MIME type essences, plus the XML and HTML types browsers render.
ACTIVE = frozenset(
    {
        "text/html",
        "text/xml",
        "application/xml",
        "text/xsl",
        "text/css",
        "application/ecmascript",
        "application/javascript",
        "application/x-ecmascript",
        "application/x-javascript",
        "text/ecmascript",
        "text/javascript",
        "text/javascript1.0",
        "text/javascript1.1",
        "text/javascript1.2",
        "text/javascript1.3",
        "text/javascript1.4",
        "text/javascript1.5",
        "text/jscript",
        "text/livescript",
        "text/x-ecmascript",
        "text/x-javascript",
    }
)
# Whole families: multipart/x-mixed-replace renders each part as a document of its own type.
ACTIVE_TOP_LEVEL = frozenset({"multipart"})


def active(essence: str) -> bool:
    """Whether a browser may run code from (or style a page with) a body of this type;
    essence is `type/subtype` in lower case, without parameters."""
    top, _, sub = essence.partition("/")
    return (
        essence in ACTIVE
        or top in ACTIVE_TOP_LEVEL
        or sub == "xml"
        or sub.endswith("+xml")
        or "html" in sub
        or "javascript" in sub
        or "ecmascript" in sub
    )


def served_type(stored: str | None) -> str:
    """The Content-Type to serve an artifact stored with type `stored` (the origin's header,
    or None): the stored value as it is when it is a well-formed (withcache.sanitise), passive
    media type, else application/octet-stream (active content, none, or anything unparseable,
    which a browser might read differently from us: `text/plain, text/html` is HTML to one)."""
    checked = sanitise_media_type(stored)
    if checked is None:
        return OCTET_STREAM
    essence = checked.split(";", 1)[0].strip().lower()
    return OCTET_STREAM if active(essence) else checked
