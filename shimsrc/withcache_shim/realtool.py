"""Find the real curl/wget behind the shim, and the cache server the environment names.

The real tool is `$REAL_CURL`/`$REAL_WGET` when set, else the first `curl`/`wget` on PATH that
is not the shim itself: a candidate is skipped when it resolves (symlinks included) to the
running shim, or to a file named like a shim, so a `curl -> curlwithcache` link can never exec
itself. Reads the filesystem, never writes.
"""

import os

SHIM_NAMES = frozenset({"curlwithcache", "wgetwithcache"})


class RealToolNotFound(Exception):
    """No real curl/wget to run; the shim exits 127 with this message."""


def pick_server(tool: str, env: dict[str, str]) -> str | None:
    """`$<TOOL>WITHCACHE_SERVER` beats `$WITHCACHE_SERVER`; empty counts as unset.

    A bare `host:port` means `http://host:port`. A scheme other than http(s) cannot be a
    cache-host, so it counts as unset too (the command line then runs untouched).
    """
    for name in (f"{tool.upper()}WITHCACHE_SERVER", "WITHCACHE_SERVER"):
        value = env.get(name, "").strip()
        if value:
            break
    else:
        return None
    if "://" not in value:
        value = "http://" + value
    if value.partition("://")[0].lower() not in ("http", "https"):
        return None
    return value.rstrip("/")


def find_real_tool(tool: str, env: dict[str, str], self_exe: str) -> str:
    path_dirs = _path_dirs(env)
    me = _resolve_self(self_exe, path_dirs)
    override = env.get(f"REAL_{tool.upper()}", "")
    name = override or tool
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in path_dirs]
    for candidate in candidates:
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        target = os.path.realpath(candidate)
        if target == me or os.path.basename(target) in SHIM_NAMES:
            continue
        return candidate
    if override:
        raise RealToolNotFound(f"REAL_{tool.upper()}={override} is not a runnable {tool}")
    raise RealToolNotFound(f"no real {tool} found on PATH")


def _path_dirs(env: dict[str, str]) -> list[str]:
    # As execvp does: no PATH means the default search path; an empty entry means ".".
    path = env.get("PATH")
    if path is None:
        path = os.defpath
    return [d or "." for d in path.split(os.pathsep)]


def _resolve_self(self_exe: str, path_dirs: list[str]) -> str:
    if "/" in self_exe:
        return os.path.realpath(self_exe)
    # A bare name was found on PATH by whoever started us, as execvp does.
    for d in path_dirs:
        candidate = os.path.join(d, self_exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return ""
