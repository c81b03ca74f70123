"""twistd plugin entry: command-line Options and makeService(options) -> MultiService."""

from __future__ import annotations

import netrc
import os
import sys

from twisted.application import service, strports
from twisted.internet import defer, endpoints
from twisted.logger import ILogObserver
from twisted.python import usage

from withcache import freshness
from withcache._log import make_logger
from withcache.cache import STREAM_WAIT, Cache, Settings
from withcache.catalog import Catalog
from withcache.events import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT, EventRetention
from withcache.fetcher import Fetcher
from withcache.keys import DROP, KEEP, SIGNED
from withcache.logs import json_observer
from withcache.origin_client import make_http_client
from withcache.policy import OriginPolicy
from withcache.scrub import Scrubber
from withcache.sizes import parse_size
from withcache.store import Store, keep_files_private
from withcache.traffic import DailyTraffic
from withcache.twisted_compat import check_server_endpoint, listening_port, raise_bind_errors
from withcache.web.auth import WeakSecret, check_secret

log = make_logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the withcache cache-host: a URL-keyed cache for big HTTP artifacts."

    optFlags = [
        ["curate", None, "Record misses only; an operator approves each fill."],
        [
            "keep-query",
            None,
            "Keep the whole query string in cache keys, signatures included.",
        ],
        [
            "drop-query",
            None,
            "Drop the whole query string from cache keys (by default only signature"
            " parameters of presigned URLs are dropped).",
        ],
        ["allow-private", None, "Let fills reach loopback/private/link-local origins."],
        [
            "netrc-over-http",
            None,
            "Also send netrc credentials to plain http:// origins (an internal mirror).",
        ],
        [
            "no-access-log",
            None,
            "No log line per request (for thousands of hits a second; /metrics still counts).",
        ],
    ]
    optParameters = [
        ["data-dir", "d", "./data", "Directory for cache.db, blobs/ and tmp/ (created)."],
        [
            "admin-listen",
            None,
            None,
            "Serve the operator UI on this endpoint only (--listen then serves the read path).",
        ],
        ["netrc", None, None, "Origin credentials (netrc format); default <data-dir>/netrc."],
        ["log-format", None, "text", "text (twistd's own) or json (one object per line)."],
    ]

    def __init__(self):
        super().__init__()
        self["workers"] = 2
        self["max-bytes"] = 0
        self["max-size"] = 0
        self["port"] = None
        self["listen"] = "tcp:3000"
        # Whether --listen was given: --port with it is a usage error whatever the order, and
        # whatever endpoint (tcp:3000 included) it names.
        self._listen_given = False
        self["allow-host"] = []
        self["admin-host"] = []
        self["scrub-interval"] = 60.0
        self["processes"] = 1
        self["idle-timeout"] = 60.0
        self["max-queued"] = 100
        self["max-fills-per-client"] = 10
        self["fresh"] = []
        self["heuristic-max"] = freshness.DAY
        self["stale-if-error"] = freshness.DAY
        self["uncacheable-for"] = 3600.0
        self["revalidate-wait"] = 2.0
        self["events-max-age"] = DEFAULT_MAX_AGE / 86400
        self["events-max-count"] = DEFAULT_MAX_COUNT
        self["stream-wait"] = STREAM_WAIT
        # Help texts come from docstrings; their line breaks and indentation are not layout
        # (usage wraps each text itself), so `--help` would show them as runs of spaces.
        self.docs = {name: " ".join(text.split()) for name, text in self.docs.items()}

    def opt_scrub_interval(self, value: str) -> None:
        """Seconds between background re-hashes of one blob (default 60; 0 turns it off)."""
        self["scrub-interval"] = _seconds("--scrub-interval", value, zero_ok=True)

    def opt_idle_timeout(self, value: str) -> None:
        """Seconds a fill waits for an origin that sends nothing before it retries (default 60)."""
        self["idle-timeout"] = _seconds("--idle-timeout", value, zero_ok=False)

    def opt_stream_wait(self, value: str) -> None:
        """Seconds a miss waits for the origin's response headers of the fill it started (or
        found under way), so its client streams the fill instead of falling through to the
        origin (default 1.5, inside the shims' 3-second probe; 0 = never wait)."""
        self["stream-wait"] = _seconds("--stream-wait", value, zero_ok=True)

    def opt_allow_host(self, glob: str) -> None:
        """Only auto-fetch misses for hosts matching GLOB (repeatable; e.g. '*.nvidia.com')."""
        if not glob.strip():
            raise usage.UsageError("--allow-host: must not be empty")
        self["allow-host"].append(glob.strip().lower())

    def opt_admin_host(self, name: str) -> None:
        """A Host name the operator UI answers to besides localhost, IP addresses and this
        machine's names (repeatable; globs like '*.lab.example'; '*' for any)."""
        if not name.strip() or "/" in name:
            raise usage.UsageError(f"--admin-host: not a host name: {name!r}")
        self["admin-host"].append(name.strip().lower())

    def opt_max_size(self, value: str) -> None:
        """Largest single artifact a fill may fetch (K/M/G/T); 0 means no cap (default)."""
        self["max-size"] = _size("--max-size", value)

    def opt_max_queued(self, value: str) -> None:
        """Fills a miss may queue behind the running ones (default 100; 0 = no bound); more
        are refused, an operator's add never is."""
        self["max-queued"] = _integer("--max-queued", value, least=0)

    def opt_max_fills_per_client(self, value: str) -> None:
        """Fills one client address's misses may have queued or running (default 10; 0 = no
        bound)."""
        self["max-fills-per-client"] = _integer("--max-fills-per-client", value, least=0)

    def opt_fresh(self, value: str) -> None:
        """GLOB=LIFETIME: URLs matching GLOB are fresh for LIFETIME after each fill or
        revalidation whatever the origin says, and stored even if it says not to (repeatable,
        first match wins; LIFETIME like 90, 30m, 1h, 2d, 1w, forever, or origin; e.g.
        '*.run=forever', '*/latest/*=1h')."""
        try:
            self["fresh"].append(freshness.Rule.parse(value))
        except ValueError as e:
            raise usage.UsageError(f"--fresh: {e}") from None

    def opt_heuristic_max(self, value: str) -> None:
        """Longest freshness given to an answer without an explicit lifetime (10% of its age
        since Last-Modified, or this without one; default 1d)."""
        self["heuristic-max"] = _duration("--heuristic-max", value)

    def opt_stale_if_error(self, value: str) -> None:
        """How long past its freshness an artifact is still served while its origin is down or
        failing, unless the origin said must-revalidate or no-cache (default 1d; 0 = never)."""
        self["stale-if-error"] = _duration("--stale-if-error", value)

    def opt_uncacheable_for(self, value: str) -> None:
        """How long misses of a URL whose answer may not be stored (no-store, private, Vary)
        are not fetched again (default 1h)."""
        self["uncacheable-for"] = _duration("--uncacheable-for", value)

    def opt_revalidate_wait(self, value: str) -> None:
        """How long a request for a stale artifact waits for its revalidation before it is
        answered as the stale rules say (default 2; under the shims' 3 s probe budget)."""
        self["revalidate-wait"] = _duration("--revalidate-wait", value)

    def opt_events_max_age(self, value: str) -> None:
        """Days the audit log keeps an event (default 365; 0 = no age limit)."""
        self["events-max-age"] = _seconds("--events-max-age", value, zero_ok=True)

    def opt_events_max_count(self, value: str) -> None:
        """Events the audit log keeps at most, the newest (default 1000000; 0 = no bound)."""
        self["events-max-count"] = _integer("--events-max-count", value, least=0)

    def opt_listen(self, value: str) -> None:
        """Twisted endpoint string to serve HTTP on (default tcp:3000)."""
        self["listen"] = value
        self._listen_given = True

    def opt_port(self, value: str) -> None:
        """Shorthand for --listen tcp:N."""
        self["port"] = _integer("--port", value, upper=65535)

    def opt_workers(self, value: str) -> None:
        """Concurrent origin downloads (default 2, at least 1)."""
        self["workers"] = _integer("--workers", value)

    def opt_max_bytes(self, value: str) -> None:
        """Cache capacity, with K/M/G/T suffixes; 0 means unlimited (default)."""
        self["max-bytes"] = _size("--max-bytes", value)

    def opt_processes(self, value: str) -> None:
        """Serving processes: N-1 workers answer hits beside the host on its socket; "auto" is
        one per CPU (default 1; needs a tcp: --listen)."""
        if value == "auto":
            self["processes"] = os.cpu_count() or 1
        else:
            self["processes"] = _integer("--processes", value, upper=64)

    opt_l = opt_listen
    opt_p = opt_port
    opt_w = opt_workers

    def postOptions(self) -> None:
        if self["port"] is not None:
            if self._listen_given:
                raise usage.UsageError("--port and --listen cannot be used together")
            self["listen"] = f"tcp:{self['port']}"
        _check_endpoint("--listen", self["listen"])
        if self["admin-listen"] is not None:
            _check_endpoint("--admin-listen", self["admin-listen"])
        if not self["data-dir"]:
            raise usage.UsageError("--data-dir: must not be empty")
        if self["processes"] > 1 and not self["listen"].startswith(("tcp:", "tcp6:")):
            raise usage.UsageError("--processes: more than one needs a tcp: or tcp6: --listen")
        self["credentials"] = _load_netrc(self["netrc"], self["data-dir"])
        try:
            check_secret(self["data-dir"], dict(os.environ))
        except WeakSecret as e:
            raise usage.UsageError(str(e)) from None
        if self["keep-query"] and self["drop-query"]:
            raise usage.UsageError("--keep-query and --drop-query cannot be used together")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format: text or json, not {self['log-format']!r}")

    def settings(self) -> Settings:
        return Settings(
            query=KEEP if self["keep-query"] else DROP if self["drop-query"] else SIGNED,
            curate=bool(self["curate"]),
            workers=self["workers"],
            max_bytes=self["max-bytes"],
            max_queued=self["max-queued"],
            fills_per_client=self["max-fills-per-client"],
            stream_wait=self["stream-wait"],
            policy=OriginPolicy.of(
                bool(self["allow-private"]), self["allow-host"], self["max-size"]
            ),
            freshness=freshness.Policy(
                rules=tuple(self["fresh"]),
                heuristic_max=self["heuristic-max"],
                stale_if_error=self["stale-if-error"],
                uncacheable_for=self["uncacheable-for"],
                revalidate_wait=self["revalidate-wait"],
            ),
        )


def _check_endpoint(name: str, description: str) -> None:
    try:
        check_server_endpoint(description)
    except (ValueError, TypeError, KeyError) as e:
        raise usage.UsageError(f"{name}: not a valid endpoint {description!r}: {e}") from e


def _seconds(name: str, value: str, zero_ok: bool) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise usage.UsageError(f"{name}: not a number: {value!r}") from None
    if not (seconds >= 0 if zero_ok else seconds > 0):
        bound = "0 or more" if zero_ok else "more than 0"
        raise usage.UsageError(f"{name}: must be {bound}, got {value}")
    return seconds


def _duration(name: str, value: str) -> float:
    try:
        return freshness.parse_duration(value)
    except ValueError as e:
        raise usage.UsageError(f"{name}: {e}") from None


def _size(name: str, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise usage.UsageError(f"{name}: {e}") from None


def _load_netrc(path: str | None, data_dir: str):
    """Origin credentials by host from a netrc file; its `default` entry is ignored on purpose.

    A default login would be sent to every origin a miss names, and anyone can name one.
    """
    if path is None:
        path = os.path.join(data_dir, "netrc")
        if not os.path.exists(path):
            return None
    try:
        parsed = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError) as e:
        raise usage.UsageError(f"--netrc: cannot read {path}: {e}") from None
    logins = {
        host.lower(): (login, password or "")
        for host, (login, _account, password) in parsed.hosts.items()
        if login
    }
    return logins.get if logins else None


def _integer(name: str, value: str, upper: int | None = None, least: int = 1) -> int:
    """value as an integer of at least `least` (and at most upper), else a usage error."""
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"{name}: not an integer: {value!r}") from None
    if number < least or (upper is not None and number > upper):
        bound = f"between {least} and {upper}" if upper else f"at least {least}"
        raise usage.UsageError(f"{name}: must be {bound}, got {number}")
    return number


class ListeningService(strports.StreamServerEndpointService):
    """Serves the site and logs the bound address (so `tcp:0` reveals its port)."""

    what = "withcache"
    address = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        listening_port(self).addCallback(self._announce)

    def _announce(self, port):
        self.address = address = port.getHost()
        log.info(
            "{what} listening on {host}:{port}",
            what=self.what,
            host=getattr(address, "host", address),
            port=getattr(address, "port", ""),
        )
        return port


class WithcacheService(service.MultiService):
    """The host's services; in JSON mode it gives twistd's application a JSON log observer.

    twistd starts logging after makeService, using the application's ILogObserver component
    when there is one; this is the hook that lets a plugin choose its log format.
    """

    log_observer = None

    @defer.inlineCallbacks
    def stopService(self):
        """Stop the children one at a time, last added first: the listeners (and serving
        workers, whose last hit counts come in as they exit) before the cache writes its last
        hit counts, and the cache before the catalog closes."""
        service.Service.stopService(self)
        for child in reversed(list(self)):
            yield defer.maybeDeferred(child.stopService)

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    from withcache.web.app import build_site, build_split_sites, read_base_on
    from withcache.web.hosts import default_names
    from withcache.web.workers import ServingWorkers

    data_dir = os.path.abspath(options["data-dir"])
    keep_files_private()
    os.makedirs(data_dir, exist_ok=True)
    settings = options.settings()

    top = WithcacheService()
    if options["log-format"] == "json":
        top.log_observer = json_observer(sys.stdout)
    store = Store(data_dir)
    settings.freshness.save(data_dir)
    catalog = Catalog(os.path.join(data_dir, "cache.db"), reactor, query=settings.query)
    catalog.setServiceParent(top)
    fetcher = Fetcher(
        reactor,
        make_http_client(reactor, settings.policy),
        settings.policy,
        credentials=options["credentials"],
        credentials_over_http=bool(options["netrc-over-http"]),
        idle_timeout=options["idle-timeout"],
        header_timeout=options["idle-timeout"],
        freshness_policy=settings.freshness,
    )
    cache = Cache(store, catalog, settings, reactor=reactor, now=reactor.seconds, fetcher=fetcher)
    cache.setServiceParent(top)
    DailyTraffic(catalog, cache.metrics, reactor.seconds).setServiceParent(top)
    EventRetention(
        catalog, reactor.seconds, options["events-max-age"] * 86400, options["events-max-count"]
    ).setServiceParent(top)
    if options["scrub-interval"]:
        Scrubber(cache, options["scrub-interval"]).setServiceParent(top)
    access_log = not options["no-access-log"]
    admin_hosts = default_names() + options["admin-host"]
    if options["admin-listen"] is None:
        site = build_site(cache, access_log=access_log, admin_hosts=admin_hosts)
    else:
        secure = options["listen"].partition(":")[0] in ("ssl", "tls")

        def read_port() -> int | None:
            """The read path's port, for the cache URLs the UI shows (known once bound)."""
            return getattr(web.address, "port", None)

        read_base = read_base_on(read_port, "https" if secure else "http")
        site, admin_site = build_split_sites(
            cache, read_base, access_log=access_log, admin_hosts=admin_hosts
        )
    web = ListeningService(endpoints.serverFromString(reactor, options["listen"]), site)
    raise_bind_errors(web)
    web.setServiceParent(top)
    if options["admin-listen"] is not None:
        admin = ListeningService(
            endpoints.serverFromString(reactor, options["admin-listen"]), admin_site
        )
        admin.what = "withcache operator UI"
        raise_bind_errors(admin)
        admin.setServiceParent(top)
    if options["processes"] > 1:
        workers = ServingWorkers(
            options["processes"], cache, site, web, query=settings.query, reactor=reactor
        )
        workers.setServiceParent(top)
    log.info(
        "withcache data dir {data_dir} (curate={curate}, query={query},"
        " workers={workers}, allow_private={allow_private}, allow_hosts={allow_hosts},"
        " origin credentials for {logins} hosts; operator UI names {admin_hosts})",
        data_dir=data_dir,
        curate=settings.curate,
        query=settings.query,
        workers=settings.workers,
        allow_private=settings.policy.allow_private,
        allow_hosts=",".join(settings.policy.allow_hosts) or "any",
        logins=len(options["credentials"].__self__) if options["credentials"] else 0,
        admin_hosts=",".join(admin_hosts) + ",<IP addresses>",
    )
    if not settings.max_bytes and not settings.curate:
        log.warn(
            "no --max-bytes: misses fill the cache until the disk is full; set a capacity"
            " (least recently hit artifacts are evicted to stay under it)"
        )
    return top
