"""`twistd` over a slow disk: `python -m tests.slow_disk_twistd BYTES_PER_S ARGS…`.

Only the disk is slowed — each store write sleeps in the writer thread as a busy disk would make
it wait — so an origin on 127.0.0.1 outruns it and the fill's flow control is exercised end to
end; everything else is the real `twistd -n withcache`.
"""

from __future__ import annotations

import sys
import time

from twisted.scripts.twistd import run

from withcache import store


def slow_down(bytes_per_second: float) -> None:
    write = store.Ingest.write

    def slow_write(self, data: bytes) -> None:
        time.sleep(len(data) / bytes_per_second)
        write(self, data)

    store.Ingest.write = slow_write  # type: ignore[method-assign]


if __name__ == "__main__":
    slow_down(float(sys.argv.pop(1)))
    sys.argv[0] = "twistd"
    run()
