"""Which command lines are plain downloads, and which of their URLs may be probed.

`find_urls(tool, args, env, server)` is the whole decision before any probe: either a reason to
pass the command line through untouched, or the argument positions of the URLs to probe. A URL
can also be skipped on its own (it already points at the cache, or rewriting it would rename
the saved file). Pure: it reads only its arguments.
"""

from . import urls
from .argscan import Opt, Scan, scan_curl, scan_wget
from .route import WGET_COMMANDS, Route, curl_route, wget_command, wget_route


def _each(names: str, why: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), why)


# Options that make a command line something other than a plain GET/HEAD of a public URL, or
# whose connection to the cache could differ from the probe's (the probe carries none of them).
_CURL_PASS: dict[str, str] = {
    **_each(
        "upload-file form form-string data data-ascii data-binary data-raw data-urlencode json"
        " url-query request-target",
        "sends a body or changes the request",
    ),
    **_each(
        "user oauth2-bearer aws-sigv4 cookie netrc netrc-file netrc-optional cert key pass"
        " tlsuser tlspassword login-options sasl-authzid delegation negotiate ntlm ntlm-wb krb"
        " krb4 digest basic anyauth proxy-user",
        "carries credentials or cookies",
    ),
    "config": "reads options from a config file",
    **_each(
        "preproxy proxy1.0 socks4 socks4a socks5 socks5-hostname unix-socket"
        " abstract-unix-socket connect-to resolve haproxy-protocol haproxy-clientip interface"
        " local-port dns-interface dns-ipv4-addr dns-ipv6-addr dns-servers doh-url ipv4 ipv6"
        " http2-prior-knowledge http3-only",
        "routes the connection in a way the probe does not",
    ),
    "metalink": "treats the download as a metalink",
    **_each("help manual version dump-ca-embed", "prints information only"),
}

_WGET_PASS: dict[str, str] = {
    **_each("post-data post-file body-data body-file", "sends a body or changes the request"),
    **_each(
        "user password http-user http-password http-passwd ask-password use-askpass ftp-user"
        " ftp-password proxy-user proxy-password proxy-passwd load-cookies certificate"
        " private-key",
        "carries credentials or cookies",
    ),
    **_each(
        "input-file config input-metalink metalink-over-http",
        "reads URLs or options from elsewhere",
    ),
    **_each(
        "recursive mirror page-requisites convert-links",
        "recurses or rewrites links relative to the URL",
    ),
    **_each(
        "force-directories protocol-directories trust-server-names adjust-extension html-extension",
        "names the saved file from more than the URL's basename",
    ),
    **_each(
        "inet4-only inet6-only bind-address bind-dns-address dns-servers",
        "routes the connection in a way the probe does not",
    ),
    **_each("help version", "prints information only"),
}

_PLAIN_METHODS = ("GET", "HEAD")
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "host")


# Options that make the tool name the saved file from the answer's Content-Disposition: a hit
# counts only when the host says it serves the origin's (probe.HIT_CD).
_NAMES_FROM_HEADERS = {"curl": "remote-header-name", "wget": "content-disposition"}
# wget options under which the file name is not simply the URL's unescaped segment and query.
_WGET_OTHER_NAMING = _each(
    "restrict-file-names no-restrict-file-names default-page iri no-iri local-encoding"
    " remote-encoding",
    "changes how wget names the file",
)


class Decision:
    """`reason` set: pass through untouched. Else `urls` are the argument indexes to probe,
    `names` the cache URL's last segment for some of them (default: urls.basename), and
    `needs_cd` whether a hit must come with the origin's Content-Disposition."""

    __slots__ = ("names", "needs_cd", "reason", "routes", "skipped", "urls")

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self.urls: list[int] = []
        self.skipped: list[tuple[int, str]] = []
        self.names: dict[int, str] = {}
        self.needs_cd = False
        # The route to the cache-host for each URL (http:// servers; an https:// one is
        # probed by the tool, which finds its own route).
        self.routes: dict[int, Route] = {}


def find_urls(tool: str, args: list[str], env: dict[str, str], server: str) -> Decision:
    if tool == "curl":
        scan = scan_curl(args)
        decision = _decide(scan, args, server, _curl_reason, _curl_skip)
    elif tool == "wget":
        scan = scan_wget(args, posixly_correct="POSIXLY_CORRECT" in env)
        decision = _decide(scan, args, server, _wget_reason, _wget_skip)
        if not any(o.name == "output-document" for o in scan.opts):
            for index in decision.urls:
                decision.names[index] = urls.wget_name(args[index])
    else:
        return Decision(f"unknown tool {tool!r}")
    decision.needs_cd = any(o.on and o.name == _NAMES_FROM_HEADERS[tool] for o in scan.opts)
    if not decision.reason:
        _find_routes(tool, scan, env, server, decision)
    return decision


# Options that change the route to the cache-host (wget's `-e` only for proxy commands).
_ROUTE_OPTIONS = {"curl": ("proxy", "noproxy"), "wget": ("proxy", "no-proxy", "execute")}


def _find_routes(tool: str, scan: Scan, env: dict[str, str], server: str, decision) -> None:
    if urls.scheme(server) == "https":
        if any(o.name in _ROUTE_OPTIONS[tool] and _routes(o) for o in scan.opts):
            decision.reason = (
                "proxy options on the command line: an https:// cache-host is probed by the"
                " tool, which would not see them"
            )
            decision.urls = []
        return
    for index in decision.urls:
        if tool == "curl":
            segment = next(seg for i, seg in scan.urls if i == index)
            route = curl_route(server, [o for o in scan.opts if o.segment == segment], env)
        else:
            route = wget_route(server, scan.opts, env)
        if not route.usable:
            decision.reason = f"the route to the cache-host is {route.describe()}"
            decision.urls = []
            return
        decision.routes[index] = route


def _routes(opt: Opt) -> bool:
    if opt.name != "execute":
        return True
    command = wget_command(opt.value or "")
    return command is not None and command[0] != "robots"


def _decide(scan: Scan, args: list[str], server: str, reason_of, skip_of) -> Decision:
    if scan.error:
        return Decision(scan.error)
    reason = reason_of(scan, args, server)
    if reason:
        return Decision(reason)
    decision = Decision()
    for index, _segment in scan.urls:
        url = args[index]
        skip = skip_of(scan, url, server)
        if skip:
            decision.skipped.append((index, skip))
        else:
            decision.urls.append(index)
    if not decision.urls:
        decision.reason = f"no URL to probe ({decision.skipped[0][1]})"
    return decision


def _common_url_reason(scan: Scan, args: list[str]) -> str | None:
    if not scan.urls:
        return "no URL"
    for index, _segment in scan.urls:
        url = args[index]
        if not urls.is_http(url):
            return f"not an http(s) URL: {url!r}"
        if urls.has_userinfo(url):
            return "credentials in the URL"
        credential = urls.credential_param(url)
        if credential is not None:
            return f"credentials in the URL's query ({credential})"
    return None


def _curl_reason(scan: Scan, args: list[str], server: str) -> str | None:
    for opt in scan.opts:
        why = _CURL_PASS.get(opt.name)
        if why and opt.on:
            return f"--{opt.name} {why}"
        if opt.name.startswith("expand-"):
            return f"--{opt.name} expands variables the shim cannot see"
        if opt.name == "request" and opt.value not in _PLAIN_METHODS:
            return f"method {opt.value!r} is not GET or HEAD"
        if opt.name == "header" and _secret_header(opt.value):
            return "a header carries credentials, cookies or a Host, or is read from a file"
    if not _curl_proto_allows(scan.opts, urls.scheme(server)):
        return "--proto forbids the cache's scheme"
    reason = _common_url_reason(scan, args)
    if reason:
        return reason
    globoff = _last_on_per_segment(scan.opts, "globoff")
    for index, segment in scan.urls:
        if not globoff.get(segment, False) and any(c in args[index] for c in "[]{}"):
            return "curl would expand the URL's [..] or {..} glob"
    return None


def _curl_skip(scan: Scan, url: str, server: str) -> str | None:
    if urls.on_server(url, server):
        return "already a cache URL"
    remote_name = any(o.on and o.name in ("remote-name", "remote-name-all") for o in scan.opts)
    if remote_name and not urls.last_segment(url):
        return "-O needs a file name in the URL"
    return None


def _wget_reason(scan: Scan, args: list[str], server: str) -> str | None:
    for opt in scan.opts:
        why = _WGET_PASS.get(opt.name)
        if why and opt.on:
            return f"--{opt.name} {why}"
        if opt.name == "execute":
            command = wget_command(opt.value or "")
            if command is None or command[0] not in WGET_COMMANDS:
                return f"-e {opt.value!r} runs a wget command the shim does not follow"
        if opt.name == "method" and (opt.value or "").upper() not in _PLAIN_METHODS:
            return f"method {opt.value!r} is not GET or HEAD"
        if opt.name == "header" and _secret_header(opt.value):
            return "a header carries credentials, cookies or a Host"
    return _common_url_reason(scan, args)


def _wget_skip(scan: Scan, url: str, server: str) -> str | None:
    if urls.on_server(url, server):
        return "already a cache URL"
    if any(o.name == "output-document" for o in scan.opts):
        return None
    # Without -O wget names the file after the URL's last segment (or index.html) plus any
    # query; the cache URL's last segment reproduces that (urls.wget_name), except where
    # options change how wget turns a URL into a name.
    other = [o.name for o in scan.opts if o.name in _WGET_OTHER_NAMING]
    if other:
        return f"--{other[0]} {_WGET_OTHER_NAMING[other[0]]}"
    if urls.dot_segment(url):
        return "wget would name the file differently"
    if urls.escapes_a_control_byte(urls.wget_name(url)):
        return "wget would name the file with a control character no cache URL can carry"
    return None


def _secret_header(value: str | None) -> bool:
    if not value:
        return False
    if value.startswith("@"):
        return True
    for line in value.splitlines():
        name = line.partition(":")[0].partition(";")[0].strip().lower()
        if name in _SECRET_HEADERS:
            return True
    return False


def _last_on_per_segment(opts: list[Opt], name: str) -> dict[int, bool]:
    state: dict[int, bool] = {}
    for opt in opts:
        if opt.name == name:
            state[opt.segment] = opt.on
    return state


def _curl_proto_allows(opts: list[Opt], scheme: str) -> bool:
    """Whether every reading of the --proto options still allows the cache's scheme.

    curl applies `+name`, `-name`, `=name` and `all` tokens left to right; whether a second
    --proto starts again from "all" or from the first one's result has varied between
    versions, so both readings must allow the scheme.
    """
    fresh = cumulative = True
    for opt in opts:
        if opt.name == "proto" and opt.value is not None:
            fresh = _apply_proto(True, opt.value, scheme)
            cumulative = _apply_proto(cumulative, opt.value, scheme)
            if fresh is None or cumulative is None:
                return False
    return bool(fresh and cumulative)


def _apply_proto(allowed: bool, spec: str, scheme: str) -> bool | None:
    for token in spec.split(","):
        if not token:
            continue  # curl splits with strtok, which skips empty fields
        action = "+"
        while token and not token[0].isalnum():
            if token[0] not in "+-=":
                return None  # curl rejects the whole option
            action = token[0]
            token = token[1:]
        if not token:
            return None
        name = token.lower()
        if name in ("all", scheme):
            allowed = action != "-"
        elif action == "=":
            allowed = False
    return allowed
