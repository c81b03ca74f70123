"""plan(): from the shim's argv and environment to the program and argv to exec.

    plan(tool, argv, env, probe) -> (real_path, final_argv)

`argv` is the shim's full argv (argv[0] is how the shim was started; it identifies the shim so
that the PATH search skips it). `final_argv[0]` is the real tool's path and the rest is the
user's arguments, untouched except for URLs the cache has: each of those is replaced by its
cache URL. `probe(real_path, tool, cache_url, via)` (via: the HTTP proxy the real tool
would use to reach the cache-host, or None) answers "hit", "hit+content-disposition",
"miss" or "unreachable"; a command line that names its file from the answer's headers (curl
`-J`, wget `--content-disposition`) counts only the second as a hit.

Everything here is decided from the arguments alone (plus the filesystem for the PATH search),
so the same function serves the shim, the tests, and the native shim's differential test.
"""

from .realtool import RealToolNotFound, find_real_tool, pick_server

# Not `typing.TYPE_CHECKING`: importing typing or collections costs start-up time at every call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Probe = Callable[[str, str, str, tuple[str, int] | None], str]

__all__ = ["Plan", "RealToolNotFound", "explain", "plan"]


class Plan:
    """What the shim will exec, and why: `reason` is set when nothing was probed."""

    __slots__ = ("argv", "probes", "real", "reason", "routes", "server")

    def __init__(self, real: str, argv: list[str], server: str | None, reason: str | None):
        self.real = real
        self.argv = argv
        self.server = server
        self.reason = reason
        # (argument index, origin URL, cache URL, probe result), in probe order.
        self.probes: list[tuple[int, str, str, str]] = []
        # How each probed URL's cache URL is reached (route.Route.describe()).
        self.routes: dict[int, str] = {}


def plan(tool: str, argv: list[str], env: dict[str, str], probe: "Probe") -> tuple[str, list[str]]:
    result = explain(tool, argv, env, probe)
    return result.real, result.argv


def explain(tool: str, argv: list[str], env: dict[str, str], probe: "Probe") -> Plan:
    real = find_real_tool(tool, env, argv[0] if argv else tool)
    args = list(argv[1:])
    server = pick_server(tool, env)
    if server is None:
        return Plan(real, [real, *args], None, "no cache server configured")

    # Imported here so that the no-server path loads nothing it does not use.
    from .rules import find_urls
    from .urls import cache_url

    decision = find_urls(tool, args, env, server)
    result = Plan(real, [real, *args], server, decision.reason)
    if decision.reason:
        return result
    for index in decision.urls:
        origin = args[index]
        target = cache_url(server, origin, decision.names.get(index))
        route = decision.routes.get(index)
        if route is not None:
            result.routes[index] = route.describe()
        answer = probe(real, tool, target, route.proxy if route else None)
        result.probes.append((index, origin, target, answer))
        if answer == "hit+content-disposition" or (answer == "hit" and not decision.needs_cd):
            result.argv[index + 1] = target
        elif answer not in ("hit", "miss"):
            # An unreachable host will not answer the next probe either: do not make the
            # user wait one timeout per URL.
            break
    return result
