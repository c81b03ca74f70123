"""Entry points: the `curlwithcache` / `wgetwithcache` console scripts and `python -m`.

    curlwithcache ARGS...                  console script (curl_main)
    wgetwithcache ARGS...                  console script (wget_main)
    python3 -m withcache_shim curl ARGS... the same, from an installed or copied package
    python3 -m withcache_shim --plan curl ARGS...
                                           print the plan as JSON instead of exec'ing
    python3 -m withcache_shim --explain curl ARGS...
                                           say in words what the shim does with this
                                           command line, probing as it would, no exec

The console scripts never interpret any argument themselves: everything goes to plan(). The
shim then replaces itself with the real tool (os.execv), so the exit status, signals and stdio
are the real tool's.

`--plan` is for tests and for the native shim's differential test: it prints
{"real", "argv", "reason", "probes"} and runs no probe; each probe's answer is taken in turn
from `$WITHCACHE_SHIM_PROBES` (comma-separated hit/miss/unreachable, "miss" once exhausted).
"""

import os
import sys

from .plan import RealToolNotFound, explain

TOOLS = ("curl", "wget")


def curl_main() -> None:
    _run("curl", sys.argv)


def wget_main() -> None:
    _run("wget", sys.argv)


def _run(tool: str, argv: list[str]) -> None:
    from .probe import probe

    try:
        result = explain(tool, argv, os.environ, probe)
    except RealToolNotFound as exc:
        _die(127, f"{tool}withcache: {exc}")
    except KeyboardInterrupt:
        # Interrupted while probing: behave like an interrupted tool, without a traceback.
        _die(130, "")
    try:
        os.execv(result.real, result.argv)
    except OSError as exc:
        _die(126, f"{tool}withcache: cannot run {result.real}: {exc.strerror}")


def _die(code: int, message: str) -> None:
    if message:
        sys.stderr.write(message + "\n")
    sys.exit(code)


def _plan_json(tool: str, argv: list[str]) -> int:
    import json

    answers = [a for a in os.environ.get("WITHCACHE_SHIM_PROBES", "").split(",") if a]

    def fake_probe(real: str, tool: str, cache_url: str, via=None) -> str:
        return answers.pop(0) if answers else "miss"

    try:
        result = explain(tool, argv, os.environ, fake_probe)
    except RealToolNotFound as exc:
        print(json.dumps({"error": str(exc), "exit": 127}))
        return 127
    probes = [
        {"url": origin, "cache_url": target, "result": answer}
        for _, origin, target, answer in result.probes
    ]
    print(
        json.dumps(
            {"real": result.real, "argv": result.argv, "reason": result.reason, "probes": probes}
        )
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    """`python -m withcache_shim [--plan|--explain] curl|wget ARGS...`"""
    argv = list(sys.argv if argv is None else argv)
    mode = argv[1] if len(argv) > 1 and argv[1] in ("--plan", "--explain") else None
    rest = argv[2:] if mode else argv[1:]
    if not rest or rest[0] not in TOOLS:
        _die(2, "usage: python -m withcache_shim [--plan|--explain] curl|wget [ARGS...]")
    tool = rest[0]
    # argv[0] stays the module's path: that is what the PATH search must not pick.
    shim_argv = [argv[0], *rest[1:]]
    if mode == "--plan":
        sys.exit(_plan_json(tool, shim_argv))
    if mode == "--explain":
        from .diagnose import explain_in_words

        sys.exit(explain_in_words(tool, shim_argv, os.environ, sys.stdout))
    _run(tool, shim_argv)


if __name__ == "__main__":
    main()
