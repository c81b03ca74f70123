"""Ask the cache-host whether it has a URL, using the real curl/wget itself.

The probe is a HEAD request with a short timeout (`curl -fsS -I --max-time 3 -o /dev/null` or
`wget --spider -q --timeout=3 --tries=1`) whose stdin, stdout and stderr are /dev/null, so
nothing of it reaches the user's terminal or pipes. Its exit code is the answer: 0 is a hit,
curl's 22 / wget's 8 (HTTP error, i.e. 404) is a miss, anything else means unreachable.
Using the same tool means the same proxies, CA files and rc files apply as for the real run.

It is spawned with os.posix_spawn rather than subprocess, which would add an import of tens of
milliseconds to every call.
"""

import os

HIT, MISS, UNREACHABLE = "hit", "miss", "unreachable"

_MISS_CODE = {"curl": 22, "wget": 8}


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


def probe(real: str, tool: str, cache_url: str) -> str:
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
        return UNREACHABLE
    return classify(tool, os.waitstatus_to_exitcode(status))
