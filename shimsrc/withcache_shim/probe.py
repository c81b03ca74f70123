"""Ask the cache-host whether it has a URL: in process for http://, with the real tool for https.

    probe(real, tool, cache_url, via=None) -> "hit", "hit+content-disposition", "miss" or
                                             "unreachable"

An `http://` cache-host gets one HTTP/1.1 HEAD from this process (httpprobe.head), directly or
through the HTTP proxy `via` (host, port) the real tool would use for it. An `https://` one is
asked with the real tool (TLS, CA files and rc files are its business): `curl -fsS -I
--max-time 3 -o /dev/null` or `wget --spider -q --timeout=3 --tries=1`, stdio on /dev/null;
exit 0 is a hit, curl's 22 / wget's 8 (an HTTP error) a miss, anything else unreachable. The
tool is spawned with os.posix_spawn rather than subprocess, whose import alone costs tens of
milliseconds.

A hit is "hit+content-disposition" when the host says it serves the origin's
Content-Disposition with it (`X-Withcache-Origin-Headers`), which `curl -J` and `wget
--content-disposition` need to name the file as the origin would.

The breaker (breaker.py) wraps both: while it is open the answer is "unreachable" at once;
a probe that could not connect or timed out opens it, one with an HTTP answer closes it.
"""

import os

HIT, MISS, UNREACHABLE = "hit", "miss", "unreachable"
HIT_CD = "hit+content-disposition"

_MISS_CODE = {"curl": 22, "wget": 8}
# Exit codes that mean "could not resolve, connect or get an answer in time".
_DOWN_CODES = {"curl": (5, 6, 7, 28), "wget": (4,)}


def probe_command(real: str, tool: str, cache_url: str) -> list[str]:
    if tool == "curl":
        return [real, "-fsS", "-I", "--max-time", "3", "-o", "/dev/null", cache_url]
    return [real, "--spider", "-q", "--timeout=3", "--tries=1", cache_url]


def classify(tool: str, exit_code: int) -> str:
    if exit_code == 0:
        return HIT
    if exit_code == _MISS_CODE.get(tool):
        return MISS
    return UNREACHABLE


def breaker_key(server: str, via: "tuple[str, int] | None") -> str:
    return server if via is None else f"{server} via {via[0]}:{via[1]}"


def server_of(cache_url: str) -> str:
    # The token and the name hold no '/', so the last "/b/" is the one cache_url() added.
    return cache_url.rpartition("/b/")[0]


def probe(real: str, tool: str, cache_url: str, via: "tuple[str, int] | None" = None) -> str:
    from .breaker import Breaker, now_ms

    breaker = Breaker.for_env(os.environ, breaker_key(server_of(cache_url), via))
    if breaker is not None and breaker.before_probe(now_ms()):
        return UNREACHABLE
    from .httpprobe import head, split_http_url

    # An http:// server with credentials in it is left to the tool, as before.
    if split_http_url(cache_url) is not None:
        answer = head(cache_url, via)
        kind, down = answer.kind, answer.down
        if kind == HIT and "content-disposition" in answer.origin_headers:
            kind = HIT_CD
    else:
        code = tool_probe(real, tool, cache_url)
        kind, down = classify(tool, code), code in _DOWN_CODES.get(tool, ())
    if breaker is not None:
        if down:
            breaker.failed(now_ms())
        elif kind != UNREACHABLE:
            breaker.succeeded()
    return kind


def tool_probe(real: str, tool: str, cache_url: str) -> int:
    """The real tool's exit code for a HEAD of `cache_url` (-1 if it could not run)."""
    null = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0),
    ]
    try:
        pid = os.posix_spawn(
            real, probe_command(real, tool, cache_url), os.environ, file_actions=actions
        )
        _, status = os.waitpid(pid, 0)
    except OSError:
        return -1
    return os.waitstatus_to_exitcode(status)
