"""`python -m withcache_shim --explain curl|wget ARGS...`: what the shim does, in words.

It runs the shim's own decision with its real probe (so the breaker and the route apply
exactly as for the command itself, and a probe's outcome updates the breaker as it would),
then prints the server, the breaker's state, the route to the cache-host for each URL, each
probe's answer, and the command line the shim would exec, instead of exec'ing it.
"""

import time

from .breaker import Breaker, backoff_ms, enabled, now_ms, state_dir
from .plan import RealToolNotFound, explain
from .probe import breaker_key, probe
from .realtool import pick_server


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def breaker_state(env, key: str) -> str:
    if not enabled(env):
        return "off (WITHCACHE_BREAKER)"
    breaker = Breaker.for_env(env, key)
    if breaker is None:
        return "unavailable (no XDG_RUNTIME_DIR or HOME to keep its state in): every call probes"
    state = breaker.read()
    now = now_ms()
    until = breaker.open_until(now)
    if until is not None and state is not None:
        return (
            f"OPEN until {_when(until)} ({(until - now + 999) // 1000} s from now; "
            f"{state.failures} failed probe(s) in a row, next back-off "
            f"{backoff_ms(state.failures + 1) // 1000} s): commands pass through unprobed"
            f" [{breaker.path}]"
        )
    if state is not None and state.failures:
        return f"half-open: the next call probes ({state.failures} failed before) [{breaker.path}]"
    return f"closed [{state_dir(env)}]"


def explain_in_words(tool: str, argv: list[str], env, out) -> int:
    answers: dict[str, str] = {}
    breakers: dict[str, str] = {}

    def recording_probe(real, probed_tool, target, via=None) -> str:
        key = breaker_key(target.rpartition("/b/")[0], via)
        state = breakers.setdefault(key, breaker_state(env, key))  # as before this probe
        started = time.monotonic()
        answer = probe(real, probed_tool, target, via)
        if state.startswith("OPEN"):
            answers[target] = f"{answer} (not sent: the breaker is open)"
        else:
            answers[target] = f"{answer} in {(time.monotonic() - started) * 1000:.1f} ms"
        return answer

    try:
        result = explain(tool, argv, env, recording_probe)
    except RealToolNotFound as exc:
        out.write(f"{tool}withcache: {exc}\n")
        return 127
    out.write(f"tool:    {tool} -> {result.real}\n")
    server = pick_server(tool, env)
    out.write(f"server:  {server or 'none (no *WITHCACHE_SERVER set): the tool runs untouched'}\n")
    for key, state in breakers.items():
        out.write(f"breaker: {state} (for {key})\n")
    if result.reason:
        out.write(f"decision: pass through untouched: {result.reason}\n")
    for index, origin, target, answer in result.probes:
        out.write(f"url:     {origin}\n")
        out.write(f"  cache URL: {target}\n")
        if index in result.routes:
            out.write(f"  route:     {result.routes[index]}\n")
        else:
            out.write("  route:     the tool's own (an https:// host is probed by the tool)\n")
        out.write(f"  probe:     {answers.get(target, answer)}\n")
        out.write(f"  rewritten: {'yes' if result.argv[index + 1] == target else 'no'}\n")
    out.write("exec:    " + " ".join(_quote(word) for word in result.argv) + "\n")
    return 0


def _quote(word: str) -> str:
    if word and all(c.isalnum() or c in "-_./:=@%+,~" for c in word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


__all__ = ["breaker_state", "explain_in_words"]
