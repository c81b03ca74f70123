"""Tokenise a curl or wget argument list the way the tool itself would, using the option tables.

The scan says, for every argument, whether it is an option (and which one, with which value) or
an operand; operands and `--url` values are the candidate URLs. It never guesses: an unknown,
abbreviated or malformed option makes the scan fail with a reason, and the caller then leaves
the command line alone. Pure: no I/O, no environment.
"""

from . import curl_options as C
from . import wget_options as W


class Opt:
    """One option occurrence: canonical long name, value (or None), and whether it is on."""

    __slots__ = ("name", "on", "segment", "value")

    def __init__(self, name: str, value: str | None, on: bool, segment: int) -> None:
        self.name = name
        self.value = value
        self.on = on
        self.segment = segment


class Scan:
    """The result of a scan: options, URL operands as (index, segment), or the failure reason."""

    __slots__ = ("error", "opts", "urls")

    def __init__(self) -> None:
        self.opts: list[Opt] = []
        self.urls: list[tuple[int, int]] = []
        self.error: str | None = None

    def fail(self, reason: str) -> "Scan":
        self.error = reason
        return self


def scan_curl(args: list[str]) -> Scan:
    """Scan curl arguments. `--next` (`-:`) starts a new segment: options apply per segment."""
    scan = Scan()
    segment = 0
    options_end = False
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if options_end or arg[:1] != "-":
            scan.urls.append((i - 1, segment))
            continue
        if arg == "--":
            options_end = True
            continue
        if arg[:2] == "--":
            found = _curl_long(arg[2:])
            if found is None:
                return scan.fail(f"unknown curl option {arg}")
            name, kind, on = found
            value = None
            if kind == C.VALUE:
                if i >= n:
                    return scan.fail(f"{arg} lacks its value")
                value = args[i]
                if name == "url":
                    scan.urls.append((i, segment))
                i += 1
            scan.opts.append(Opt(name, value, on, segment))
            segment += name == "next"
            continue
        if arg == "-":
            return scan.fail("curl rejects a lone '-'")
        for j in range(1, len(arg)):
            name = C.SHORT.get(arg[j])
            if name is None:
                return scan.fail(f"unknown curl option -{arg[j]} in {arg}")
            if C.LONG[name] == C.VALUE:
                # The rest of the bundle is the value (-oout); else the next argument is.
                value = arg[j + 1 :]
                if not value:
                    if i >= n:
                        return scan.fail(f"-{arg[j]} lacks its value")
                    value = args[i]
                    i += 1
                scan.opts.append(Opt(name, value, True, segment))
                break
            scan.opts.append(Opt(name, None, True, segment))
            segment += name == "next"
    return scan


def _curl_long(word: str) -> tuple[str, str, bool] | None:
    kind = C.LONG.get(word)
    if kind is not None:
        return word, kind, True
    if word.startswith("no-") and C.LONG.get(word[3:]) == C.BOOL:
        return word[3:], C.BOOL, False
    if word.startswith(C.EXPAND_PREFIX) and C.LONG.get(word[len(C.EXPAND_PREFIX) :]) == C.VALUE:
        return word, C.VALUE, True
    return None


def scan_wget(args: list[str], posixly_correct: bool = False) -> Scan:
    """Scan wget arguments as GNU getopt_long does: options may follow operands unless
    POSIXLY_CORRECT is set, in which case the first operand ends the options."""
    scan = Scan()
    options_end = False
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if options_end or arg[:1] != "-" or arg == "-":
            scan.urls.append((i - 1, 0))
            options_end = options_end or posixly_correct
            continue
        if arg == "--":
            options_end = True
            continue
        if arg[:2] == "--":
            name, eq, attached = arg[2:].partition("=")
            kind = W.LONG.get(name)
            if kind is None:
                return scan.fail(f"unknown or abbreviated wget option --{name}")
            if kind == W.FLAG:
                if eq:
                    return scan.fail(f"wget's --{name} takes no value")
                scan.opts.append(Opt(name, None, True, 0))
            elif kind == W.OPTIONAL:
                value = attached if eq else None
                scan.opts.append(Opt(name, value, _wget_on(value), 0))
            else:
                if not eq:
                    if i >= n:
                        return scan.fail(f"--{name} lacks its value")
                    attached = args[i]
                    i += 1
                scan.opts.append(Opt(name, attached, True, 0))
            continue
        for j in range(1, len(arg)):
            entry = W.SHORT.get(arg[j])
            if entry is None:
                return scan.fail(f"unknown wget option -{arg[j]} in {arg}")
            name, takes_value = entry
            if takes_value:
                value = arg[j + 1 :]
                if not value:
                    if i >= n:
                        return scan.fail(f"-{arg[j]} lacks its value")
                    value = args[i]
                    i += 1
                scan.opts.append(Opt(name, value, True, 0))
                break
            scan.opts.append(Opt(name, None, True, 0))
    return scan


def _wget_on(value: str | None) -> bool:
    # wget's booleans read on/yes/1 and off/no/0; anything else is an error in wget, which we
    # count as "on" so that a rule keyed on the option errs towards passing through.
    return value is None or value.lower() not in ("off", "no", "0")
