"""twistd plugin entry: command-line Options, and makeService(options) -> the host's services
(build_service(options, reactor) underneath, for a caller with its own reactor)."""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application import service, strports
from twisted.internet import defer, endpoints
from twisted.logger import ILogObserver
from twisted.python import usage

from withcache import freshness, leases
from withcache._log import make_logger
from withcache.blobstore import StoreUnavailable
from withcache.cache import STREAM_WAIT, Cache, Settings
from withcache.catalog import Catalog
from withcache.catalog_db import (
    DEFAULT_POOL,
    SQLITE,
    CatalogURLError,
    catalog_of,
    has_password,
    parse_url,
    redact,
)
from withcache.events import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT, EventRetention
from withcache.fetcher import Fetcher
from withcache.keys import DROP, KEEP, SIGNED
from withcache.logs import json_observer
from withcache.origin_client import make_http_client
from withcache.policy import OriginPolicy
from withcache.scrub import Scrubber
from withcache.sizes import parse_size
from withcache.store import keep_files_private
from withcache.storeconfig import StoreConfig
from withcache.traffic import DailyTraffic
from withcache.twisted_compat import check_server_endpoint, listening_port, raise_bind_errors
from withcache.web.auth import WeakSecret, check_secret

log = make_logger()


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


def _option(
    long: str, short: str | None, default: str | None, doc: str, parse: Callable[[str, str], Any]
) -> list[Any]:
    """One optParameters row whose coercer names the option in its usage errors."""
    return [long, short, default, doc, partial(parse, f"--{long}")]


def _text(_name: str, value: str) -> str:
    return value


def _log_format(name: str, value: str) -> str:
    if value not in ("text", "json"):
        raise usage.UsageError(f"{name}: text or json, not {value!r}")
    return value


def _host_id(name: str, value: str) -> str:
    if not leases.HOST_ID.fullmatch(value):
        raise usage.UsageError(
            f"{name}: 1-64 letters, digits and . _ : @ - (starting with a letter or digit),"
            f" not {value!r}"
        )
    return value


def _advertise_url(name: str, value: str) -> str:
    if not leases.valid_advertise_url(value):
        raise usage.UsageError(
            f"{name}: an http:// or https:// URL with a host and no user, query or fragment,"
            f" not {value!r}"
        )
    return value.rstrip("/")


def advertised_address(address: Any, listen: str) -> str | None:
    """The URL other hosts reach a read path bound to address on (from --listen) by, when the
    address names one interface (not 0.0.0.0 or ::, which could be any of them)."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not host or not port or host in ("0.0.0.0", "::"):
        return None
    scheme = "https" if listen.partition(":")[0] in ("ssl", "tls") else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _catalog(name: str, value: str) -> str:
    try:
        parse_url(value)
    except CatalogURLError as e:
        raise usage.UsageError(f"{name}: {e}") from None
    return value


def _processes(name: str, value: str) -> int:
    return (os.cpu_count() or 1) if value == "auto" else _integer(name, value, upper=64)


def _blob_store(options: usage.Options) -> StoreConfig:
    """The --store options, checked; a remote store must answer now (bucket there, access
    allowed) or the host does not start, with one line saying why."""
    config = StoreConfig(
        options["store"], options["s3-endpoint"], options["s3-region"], options["local-cache-bytes"]
    )
    try:
        config.check()
    except ValueError as e:
        raise usage.UsageError(f"--store: {e}") from None
    try:
        config.check_reachable()
    except StoreUnavailable as e:
        raise usage.UsageError(f"--store: {e}") from None
    return config


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
    # The one place each option's default is written: as it would be typed, so that `--help`
    # shows it ("[default: 1d]"), the README's table is checked against that (tests/test_tap.py)
    # and __init__ parses it with the option's own coercer.
    optParameters = [
        _option(
            "data-dir", "d", "./data", "Directory for cache.db, blobs/ and tmp/ (created).", _text
        ),
        _option(
            "catalog",
            None,
            None,
            "The catalog: a SQLite path, or postgresql://user@host:port/db (password in"
            " PGPASSWORD or ~/.pgpass, not here: argv is public); default $WITHCACHE_CATALOG,"
            " else <data-dir>/cache.db.",
            _catalog,
        ),
        _option(
            "catalog-pool",
            None,
            str(DEFAULT_POOL),
            "PostgreSQL catalog: threads (each with a connection) its queries run on.",
            partial(_integer, upper=64),
        ),
        _option("listen", "l", "tcp:3000", "Twisted endpoint string to serve HTTP on.", _text),
        _option(
            "admin-listen",
            None,
            None,
            "Serve the operator UI on this endpoint only (--listen then serves the read path).",
            _text,
        ),
        _option("port", "p", None, "Shorthand for --listen tcp:N.", partial(_integer, upper=65535)),
        _option("workers", "w", "2", "Concurrent origin downloads (at least 1).", _integer),
        _option(
            "max-bytes",
            None,
            "0",
            "Cache capacity, with K/M/G/T suffixes; 0 means unlimited.",
            _size,
        ),
        _option(
            "max-size",
            None,
            "0",
            "Largest single artifact a fill may fetch (K/M/G/T); 0 means no cap.",
            _size,
        ),
        _option(
            "max-queued",
            None,
            "100",
            "Fills a miss may queue behind the running ones (0 = no bound); more are refused,"
            " an operator's add never is.",
            partial(_integer, least=0),
        ),
        _option(
            "max-fills-per-client",
            None,
            "10",
            "Fills one client address's misses may have queued or running (0 = no bound).",
            partial(_integer, least=0),
        ),
        _option(
            "stream-wait",
            None,
            f"{STREAM_WAIT:g}",
            "Seconds a miss waits for the origin's response headers of the fill it started (or"
            " found under way), so its client streams the fill instead of falling through to"
            " the origin (inside the shims' 3-second probe; 0 = never wait).",
            partial(_seconds, zero_ok=True),
        ),
        _option(
            "netrc",
            None,
            None,
            "Origin credentials (netrc format); default <data-dir>/netrc.",
            _text,
        ),
        _option(
            "heuristic-max",
            None,
            "1d",
            "Longest freshness given to an answer without an explicit lifetime (10% of its age"
            " since Last-Modified, or this without one).",
            _duration,
        ),
        _option(
            "stale-if-error",
            None,
            "1d",
            "How long past its freshness an artifact is still served while its origin is down"
            " or failing, unless the origin said must-revalidate or no-cache (0 = never).",
            _duration,
        ),
        _option(
            "uncacheable-for",
            None,
            "1h",
            "How long misses of a URL whose answer may not be stored (no-store, private, Vary)"
            " are not fetched again.",
            _duration,
        ),
        _option(
            "revalidate-wait",
            None,
            "2",
            "How long a request for a stale artifact waits for its revalidation before it is"
            " answered as the stale rules say (under the shims' 3 s probe budget).",
            _duration,
        ),
        _option(
            "scrub-interval",
            None,
            "60",
            "Seconds between background re-hashes of one blob (0 turns it off).",
            partial(_seconds, zero_ok=True),
        ),
        _option(
            "store",
            None,
            "local",
            "Where blobs live: local (the data dir's blobs/) or s3://BUCKET/PREFIX, an"
            " S3-compatible object store (credentials from AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, never the command line).",
            _text,
        ),
        _option(
            "s3-endpoint",
            None,
            None,
            "The S3 endpoint URL of a store that is not AWS (SeaweedFS, MinIO, Ceph).",
            _text,
        ),
        _option(
            "s3-region",
            None,
            None,
            "The S3 region; default botocore's (AWS_DEFAULT_REGION, the profile), else us-east-1.",
            _text,
        ),
        _option(
            "local-cache-bytes",
            None,
            None,
            "With an s3:// --store: room for local copies of hot blobs in the data dir"
            " (K/M/G/T; least recently used dropped first); default 10% of its filesystem.",
            _size,
        ),
        _option(
            "idle-timeout",
            None,
            "60",
            "Seconds a fill waits for an origin that sends nothing before it retries.",
            partial(_seconds, zero_ok=False),
        ),
        _option(
            "log-format",
            None,
            "text",
            "text (twistd's own) or json (one object per line).",
            _log_format,
        ),
        _option(
            "events-max-age",
            None,
            f"{DEFAULT_MAX_AGE / 86400:g}",
            "Days the audit log keeps an event (0 = no age limit).",
            partial(_seconds, zero_ok=True),
        ),
        _option(
            "events-max-count",
            None,
            str(DEFAULT_MAX_COUNT),
            "Events the audit log keeps at most, the newest (0 = no bound).",
            partial(_integer, least=0),
        ),
        _option(
            "host-id",
            None,
            None,
            "This host's name to the others on a shared catalog (fill leases, the UI); default"
            " one made once and kept in <data-dir>/host-id (hosts sharing a data dir need one"
            " each).",
            _host_id,
        ),
        _option(
            "advertise-url",
            None,
            None,
            "The URL other hosts on the catalog reach this host's read path at, to stream a"
            " fill it holds to their clients; default from --listen when it names one address"
            " (tcp:3000:interface=10.0.0.5 -> http://10.0.0.5:3000), else none (they wait).",
            _advertise_url,
        ),
        _option(
            "lease",
            None,
            f"{leases.LEASE:g}",
            "Seconds a fill's lease on the catalog lasts unless its host renews it (every third"
            " of it); another host takes over a fill whose lease expired.",
            partial(_seconds, zero_ok=False),
        ),
        _option(
            "processes",
            None,
            "1",
            'Serving processes: N-1 workers answer hits beside the host on its socket; "auto"'
            " is one per CPU (needs a tcp: --listen).",
            _processes,
        ),
    ]

    def __init__(self):
        super().__init__()
        # Each default goes through its option's coercer, as a typed value would.
        for long, _short, default, _doc, coerce in self.optParameters:
            if default is not None:
                self[long] = coerce(default)
        # Repeatable options: lists the opt_ methods below add to.
        self["allow-host"] = []
        self["admin-host"] = []
        self["fresh"] = []
        # Whether --listen was given: --port with it is a usage error whatever the order, and
        # whatever endpoint (tcp:3000 included) it names.
        self._listen_given = False
        # Help texts come from docstrings; their line breaks and indentation are not layout
        # (usage wraps each text itself), so `--help` would show them as runs of spaces.
        self.docs = {name: " ".join(text.split()) for name, text in self.docs.items() if text}

    def opt_listen(self, value: str) -> None:
        # No docstring: the help text and default are optParameters' (usage takes a handler's
        # docstring over them); this handler only notes that --listen was given.
        self["listen"] = value
        self._listen_given = True

    opt_l = opt_listen

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

    def opt_fresh(self, value: str) -> None:
        """GLOB=LIFETIME: URLs matching GLOB are fresh for LIFETIME after each fill or
        revalidation whatever the origin says, and stored even if it says not to (repeatable,
        first match wins; LIFETIME like 90, 30m, 1h, 2d, 1w, forever, or origin; e.g.
        '*.run=forever', '*/latest/*=1h')."""
        try:
            self["fresh"].append(freshness.Rule.parse(value))
        except ValueError as e:
            raise usage.UsageError(f"--fresh: {e}") from None

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
        self["blob-store"] = _blob_store(self)
        try:
            check_secret(self["data-dir"], dict(os.environ))
        except WeakSecret as e:
            raise usage.UsageError(str(e)) from None
        if self["keep-query"] and self["drop-query"]:
            raise usage.UsageError("--keep-query and --drop-query cannot be used together")
        # Resolved now (not in makeService) so a bad $WITHCACHE_CATALOG is a usage error too.
        self["catalog-url"] = _catalog(
            "--catalog", catalog_of(self["catalog"], os.path.abspath(self["data-dir"]))
        )

    def settings(self) -> Settings:
        return Settings(
            query=KEEP if self["keep-query"] else DROP if self["drop-query"] else SIGNED,
            curate=bool(self["curate"]),
            workers=self["workers"],
            max_bytes=self["max-bytes"],
            max_queued=self["max-queued"],
            fills_per_client=self["max-fills-per-client"],
            stream_wait=self["stream-wait"],
            lease=self["lease"],
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
    """twistd's entry point (ServiceMaker calls it with the options alone): the host's
    services on the global reactor, which twistd has installed by now."""
    from twisted.internet import reactor

    return build_service(options, reactor)


def build_service(options: Options, reactor: Any) -> WithcacheService:
    """The host's services for parsed options, on the given reactor."""
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
    config: StoreConfig = options["blob-store"]
    store = config.open(data_dir, checked=True)
    config.save(data_dir)  # for withcache-admin (never credentials)
    settings.freshness.save(data_dir)
    catalog = Catalog(
        options["catalog-url"], reactor, query=settings.query, threads=options["catalog-pool"]
    )
    if catalog.dialect != SQLITE and options["catalog"] and has_password(catalog.url):
        log.warn(
            "--catalog carries a password, which anyone on this machine can read in the process"
            " list: give it in PGPASSWORD, ~/.pgpass (PGPASSFILE) or $WITHCACHE_CATALOG instead"
        )
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

    def advertise() -> str | None:
        """Where other hosts reach this one's read path (known once it is bound)."""
        return options["advertise-url"] or advertised_address(web.address, options["listen"])

    identity = leases.Identity(options["host-id"] or leases.persisted_host_id(data_dir), advertise)
    cache = Cache(
        store,
        catalog,
        settings,
        reactor=reactor,
        now=reactor.seconds,
        fetcher=fetcher,
        identity=identity,
    )
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
        "withcache host {host_id}, data dir {data_dir}, catalog {catalog} (curate={curate},"
        " query={query},"
        " workers={workers}, allow_private={allow_private}, allow_hosts={allow_hosts},"
        " origin credentials for {logins} hosts; operator UI names {admin_hosts})",
        host_id=identity.host_id,
        data_dir=data_dir,
        catalog=redact(catalog.url),
        curate=settings.curate,
        query=settings.query,
        workers=settings.workers,
        allow_private=settings.policy.allow_private,
        allow_hosts=",".join(settings.policy.allow_hosts) or "any",
        logins=len(options["credentials"].__self__) if options["credentials"] else 0,
        admin_hosts=",".join(admin_hosts) + ",<IP addresses>",
    )
    if config.remote:
        local = getattr(store, "local", None)
        log.info(
            "blobs in {store} (endpoint {endpoint}); local copies up to {limit} bytes,"
            " {held} bytes held",
            store=config.url,
            endpoint=config.endpoint or "AWS",
            limit=getattr(local, "limit", 0),
            held=getattr(local, "used", 0),
        )
    if not settings.max_bytes and not settings.curate:
        log.warn(
            "no --max-bytes: misses fill the cache until the disk is full; set a capacity"
            " (least recently hit artifacts are evicted to stay under it)"
        )
    return top
