"""The breaker: after a probe finds the cache-host down, pass commands through without probing.

A probe that cannot connect, or gets no answer within its budget, records a failure in a small
per-user state file; while the breaker is open (until `now + back-off`) every shim passes its
command through at once. The back-off doubles with each consecutive failure (BASE_S, 2*BASE_S,
... up to MAX_S); the first probe that gets an HTTP answer removes the file. After a
back-off, the first shim to probe claims the next CLAIM_MS, so others keep passing through
meanwhile.

The file is `breaker-<euid>` in `$XDG_RUNTIME_DIR/withcache/` (per-user, 0700, in memory) or,
without it, `$HOME/.cache/withcache/`, each base used only when it belongs to the user. The
directory must be ours and writable by nobody else, the file a regular file of ours; anything
else (missing HOME, a foreign or odd file, a line this code cannot read) means "no breaker":
the shim probes as before. Writes go to a
per-process temporary file renamed over the old one, so concurrent shims never see a torn
file (the last writer wins). `WITHCACHE_BREAKER=off` (or 0, no) turns the breaker off.

The native shim (shim-native/src/breaker.zig) reads and writes the same file, the same way:

    withcache-breaker 1 <failures> <open-until, Unix ms> <key>\\n

where `<key>` is the cache-host and the route to it (`<server>` or `<server> via <proxy>`): a
state written for another server or route is ignored and replaced.
"""

import os
import time

BASE_S = 10
MAX_S = 300
# After a back-off the first shim to probe again claims the next CLAIM_MS (its probe's budget
# and a margin), so shims started meanwhile keep passing through instead of all waiting on a
# host that may still hang.
CLAIM_MS = 4000
MAGIC = "withcache-breaker 1"
OFF_VALUES = ("off", "0", "no", "false")
MAX_FILE = 4096


def enabled(env) -> bool:
    return env.get("WITHCACHE_BREAKER", "").strip().lower() not in OFF_VALUES


def state_dir(env) -> str | None:
    """`$XDG_RUNTIME_DIR/withcache`, else `$HOME/.cache/withcache`, each only when that base
    directory is the running user's own (after `su` or `sudo -E` it may be someone else's)."""
    for base, sub in (("XDG_RUNTIME_DIR", "withcache"), ("HOME", ".cache/withcache")):
        path = env.get(base, "")
        if path.startswith("/") and _owned(path):
            return os.path.join(path, sub)
    return None


def _owned(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


def backoff_ms(failures: int) -> int:
    return min(BASE_S * 2 ** min(max(failures, 1) - 1, 16), MAX_S) * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class State:
    """What the file says for our key: consecutive failures and when the breaker closes."""

    __slots__ = ("failures", "until_ms")

    def __init__(self, failures: int, until_ms: int) -> None:
        self.failures = failures
        self.until_ms = until_ms


class Breaker:
    __slots__ = ("directory", "key", "path")

    def __init__(self, directory: str, key: str) -> None:
        self.directory = directory
        self.key = key
        self.path = os.path.join(directory, f"breaker-{os.geteuid()}")

    @classmethod
    def for_env(cls, env, key: str) -> "Breaker | None":
        """The breaker for `key`, or None when it is off or cannot be kept safely."""
        if not enabled(env) or "\n" in key or "\r" in key:
            return None
        directory = state_dir(env)
        return None if directory is None else cls(directory, key)

    def read(self) -> State | None:
        """Our state, or None (no file, another key, or a file that is not ours or not
        readable as ours: all mean "closed")."""
        if not self._dir_ok():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not _regular_and_ours(st) or st.st_size > MAX_FILE:
                return None
            data = os.read(fd, MAX_FILE)
        except OSError:
            return None
        finally:
            os.close(fd)
        return parse(data, self.key)

    def open_until(self, now: int, state: State | None = None) -> int | None:
        """When the breaker closes (Unix ms) if it is open now, else None."""
        state = self.read() if state is None else state
        if state is None or state.failures < 1 or state.until_ms <= now:
            return None
        if state.until_ms - now > MAX_S * 1000:
            return None  # the clock went back, or the file lies: probe
        return state.until_ms

    def before_probe(self, now: int) -> bool:
        """True when the breaker is open (pass through, do not probe). When it has failures
        but its back-off is over, claim the next probe for this shim (CLAIM_MS)."""
        state = self.read()
        if self.open_until(now, state) is not None:
            return True
        if state is not None and state.failures > 0:
            self._write(f"{MAGIC} {state.failures} {now + CLAIM_MS} {self.key}\n")
        return False

    def failed(self, now: int) -> None:
        state = self.read()
        failures = (state.failures if state else 0) + 1
        self._write(f"{MAGIC} {failures} {now + backoff_ms(failures)} {self.key}\n")

    def succeeded(self) -> None:
        if self.read() is not None:
            _quietly(os.unlink, self.path)

    def _dir_ok(self) -> bool:
        try:
            st = os.lstat(self.directory)
        except OSError:
            return False
        return (st.st_mode & 0o170000) == 0o040000 and _ours_and_private(st)

    def _write(self, line: str) -> None:
        # ~/.cache if it is missing, then ours; either may exist already (ours is checked
        # next) or be impossible to make (then there is no breaker).
        _quietly(os.mkdir, os.path.dirname(self.directory), 0o700)
        _quietly(os.mkdir, self.directory, 0o700)
        if not self._dir_ok():
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError:
            return
        try:
            os.write(fd, line.encode("utf-8", "surrogateescape"))
            os.close(fd)
            os.rename(tmp, self.path)
        except OSError:
            _quietly(os.unlink, tmp)


def _quietly(call, *args) -> None:
    # Not contextlib.suppress: importing contextlib costs start-up time on every call.
    try:
        call(*args)
    except OSError:
        return


def _ours_and_private(st) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _regular_and_ours(st) -> bool:
    return (st.st_mode & 0o170000) == 0o100000 and _ours_and_private(st)


def parse(data: bytes, key: str) -> State | None:
    """The state in a file's bytes for `key`; None if it is malformed or for another key."""
    if not data.endswith(b"\n") or data.count(b"\n") != 1:
        return None
    words = data[:-1].decode("utf-8", "surrogateescape").split(" ", 4)
    if len(words) != 5 or " ".join(words[:2]) != MAGIC or words[4] != key:
        return None
    failures, until = words[2], words[3]
    if not (_digits(failures) and _digits(until)) or len(failures) > 6 or len(until) > 15:
        return None
    return State(int(failures), int(until))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()
