"""The option tables against the installed curl and wget, so that they cannot drift silently.

Two checks per tool. The help text: every option `curl --help all` / `wget --help` lists is in
the table, taking a value exactly when the help shows one. The parser itself: every name in the
table is asked of the installed tool without a URL (so nothing touches the network), and what
its option parser answers (requires a value / rejects a value / rejects `--no-` / unknown) must
be the table's kind. Names added by a later release are checked only on a tool that has them.
"""

from __future__ import annotations

import re
import shutil
import string
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from withcache_shim import curl_options as C
from withcache_shim import wget_options as W

CURL = shutil.which("curl", path="/usr/bin:/bin")
WGET = shutil.which("wget", path="/usr/bin:/bin")
needs_curl = pytest.mark.skipif(CURL is None, reason="no curl installed")
needs_wget = pytest.mark.skipif(WGET is None, reason="no wget installed")

# Help lines whose placeholder is not what the parser does. curl: --help shows <category> but
# the parser only peeks at the next word. wget: --max-redirect and --hsts-file need a value
# that the help text does not show.
CURL_HELP_SHOWS_VALUE_BUT_NONE = {"help"}
WGET_HELP_HIDES_VALUE = {"max-redirect", "hsts-file"}
# curl 7.x's parser also answers to `-*` and `-$`, the internal prefixes of its long-only
# options; they are undocumented (gone in 8.x), and as unknown letters they pass through.
CURL_7_INTERNAL_LETTERS = {"*", "$"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An empty HOME, so no ~/.curlrc or ~/.wgetrc changes what the tools answer."""
    return tmp_path_factory.mktemp("home")


def _ask(argv: list[str], home) -> str:
    done = subprocess.run(
        argv,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )
    return done.stderr + done.stdout


def _version(tool: str) -> tuple[int, ...]:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    return tuple(int(p) for p in re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out).groups("0"))


def _parallel(fn, items):
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(items, pool.map(fn, items), strict=True))


# ---- curl ------------------------------------------------------------------------------------


def _curl_help_options() -> list[tuple[str | None, str, bool]]:
    text = subprocess.run([CURL, "--help", "all"], capture_output=True, text=True).stdout
    found = []
    for line in text.splitlines():
        m = re.match(r"^\s+(?:-(\S), )?--(\S+)(?: ([<\[]))?", line)
        if m:
            found.append((m.group(1), m.group(2), m.group(3) is not None))
    return found


def _curl_kind(name: str, home) -> str | None:
    # -q first: ignore any curlrc. Without a URL curl stops right after parsing.
    out = _ask([CURL, "-q", f"--{name}"], home)
    if "requires parameter" in out:
        return C.VALUE
    if "is unknown" in out or "is ambiguous" in out:
        return None
    out = _ask([CURL, "-q", f"--no-{name}"], home)
    return C.FLAG if "isn't a boolean" in out else C.BOOL


@needs_curl
def test_curl_help_lists_only_options_in_the_table() -> None:
    options = _curl_help_options()
    assert len(options) > 200
    for short, name, shows_value in options:
        if name not in C.LONG and name.startswith("no-"):
            name = name[3:]  # --no-buffer, --no-clobber, ... are negated booleans
            assert C.LONG.get(name) == C.BOOL, name
        assert name in C.LONG, name
        takes_value = C.LONG[name] == C.VALUE
        if name in CURL_HELP_SHOWS_VALUE_BUT_NONE:
            shows_value = not shows_value
        assert takes_value == shows_value, name
        if short:
            assert C.SHORT[short] == name, short


@needs_curl
def test_curl_parser_agrees_with_every_long_name(home) -> None:
    version = _version(CURL)
    kinds = _parallel(lambda name: _curl_kind(name, home), sorted(C.LONG))
    for name, kind in kinds.items():
        since = C.SINCE_8.get(name)
        if since is None:
            assert kind == C.LONG[name], name
        elif version >= tuple(int(p) for p in since[1].split(".")):
            # A later curl may let these be negated; the table may only be stricter.
            assert kind == C.LONG[name] or (C.LONG[name] == C.FLAG and kind == C.BOOL), name
        else:
            assert kind is None, f"{name} is in curl {version}, not only in {since[1]}"


@needs_curl
def test_curl_parser_agrees_with_every_short_letter(home) -> None:
    letters = [c for c in string.ascii_letters + string.digits + string.punctuation if c != "-"]

    def kind(letter: str) -> str | None:
        out = _ask([CURL, "-q", f"-{letter}"], home)
        if "is unknown" in out:
            return None
        return C.VALUE if "requires parameter" in out else C.FLAG

    found = {c: k for c, k in _parallel(kind, letters).items() if k is not None}
    assert set(found) - CURL_7_INTERNAL_LETTERS == set(C.SHORT)
    for letter in C.SHORT:
        assert (found[letter] == C.VALUE) == C.short_takes_value(letter), letter


# ---- wget ------------------------------------------------------------------------------------


def _wget_help_options() -> list[tuple[str | None, str, bool]]:
    text = subprocess.run([WGET, "--help"], capture_output=True, text=True).stdout
    found = []
    for line in text.splitlines():
        m = re.match(r"^\s+(?:-(\w+),\s+)?--([\w-]+)(=)?", line)
        if m:
            found.append((m.group(1), m.group(2), m.group(3) is not None))
    return found


def _wget_kind(name: str, home) -> str | None:
    out = _ask([WGET, f"--{name}"], home)
    if "requires an argument" in out:
        return W.VALUE
    if "unrecognized option" in out or "is ambiguous" in out:
        return None
    out = _ask([WGET, f"--{name}=x"], home)
    return W.FLAG if "allow an argument" in out else W.OPTIONAL


@needs_wget
def test_wget_help_lists_only_options_in_the_table() -> None:
    options = _wget_help_options()
    assert len(options) > 150
    for short, name, shows_value in options:
        assert name in W.LONG, name
        kind = W.LONG[name]
        if shows_value or name in WGET_HELP_HIDES_VALUE:
            assert kind in (W.VALUE, W.OPTIONAL), name
        else:
            assert kind in (W.FLAG, W.OPTIONAL), name
        if short and len(short) == 1:
            assert W.SHORT[short][0] == name, short
        elif short:
            # -nv, -nc, -nd, -nH, -np: the letter n takes the rest of the word as its value
            assert short[0] == "n" and W.SHORT["n"] == ("no", True), short


@needs_wget
def test_wget_parser_agrees_with_every_long_name(home) -> None:
    kinds = _parallel(lambda name: _wget_kind(name, home), sorted(W.LONG))
    for name, kind in kinds.items():
        if name in W.OPTIONAL_BUILD and kind is None:
            continue  # this wget was built without that library
        assert kind == W.LONG[name], name


@needs_wget
def test_wget_knows_no_long_name_the_table_lacks(home) -> None:
    # For an ambiguous prefix getopt lists every long name that starts with it.
    for letter in string.ascii_lowercase:
        ours = {n for n in W.LONG if n.startswith(letter) and n not in W.OPTIONAL_BUILD}
        out = _ask([WGET, f"--{letter}"], home)
        if "is ambiguous" in out:
            theirs = set(re.findall(r"'--([^'=]+)'", out.split("possibilities:", 1)[1]))
            assert theirs - set(W.OPTIONAL_BUILD) == ours, letter
        elif "unrecognized option" in out:
            assert ours == set(), letter
        else:
            assert len(ours) == 1, letter  # a unique prefix is accepted as that option


@needs_wget
def test_wget_parser_agrees_with_every_short_letter(home) -> None:
    letters = list(string.ascii_letters + string.digits)

    def kind(letter: str) -> tuple[str, bool] | None:
        out = _ask([WGET, f"-{letter}"], home)
        if "invalid option" in out:
            return None
        return letter, "requires an argument" in out

    found = {c: r[1] for c, r in _parallel(kind, letters).items() if r is not None}
    assert found == {c: takes for c, (_name, takes) in W.SHORT.items()}
