//! withcache-shim: the native curl/wget shim. Same contract as the Python shim's plan()
//! (shimsrc/withcache_shim): decide from the arguments whether the command line is a plain
//! download, probe the cache-host with the real tool for each URL, rewrite the hits to their
//! cache URLs, then execve the real tool. The basename of argv[0] picks the tool.
//!
//! Only raw Linux syscalls are used (no libc, no std.Io), so the binary is small, static,
//! and starts in well under a millisecond.
const std = @import("std");
const linux = std.os.linux;
const mem = std.mem;
const T = @import("tables.zig");
const u = @import("text.zig");
const httpprobe = @import("httpprobe.zig");
const breaker = @import("breaker.zig");
const route = @import("route.zig");

const Tool = enum { curl, wget };
const Str = []const u8;
const Alloc = mem.Allocator;

var arena_state: std.heap.ArenaAllocator = undefined;
var envp: [*:null]const ?[*:0]const u8 = undefined;

pub fn main(init: std.process.Init.Minimal) u8 {
    arena_state = std.heap.ArenaAllocator.init(std.heap.page_allocator);
    const gpa = arena_state.allocator();
    const argv = init.args.vector;
    envp = init.environ.block.slice.ptr;
    run(gpa, argv) catch die(1, "withcache-shim: out of memory", "", "");
    return 1;
}

fn run(gpa: Alloc, argv: []const [*:0]const u8) !void {
    if (argv.len == 0) die(2, usage, "", "");
    const argv0 = mem.span(argv[0]);
    var first: usize = 1;
    // `withcache-shim --explain curl ARGS...`: say what the shim does instead of exec'ing.
    const explain = toolOf(basename(argv0)) == null and argv.len > 1 and mem.eql(u8, mem.span(argv[1]), "--explain");
    if (explain) first = 2;
    const tool = toolOf(basename(argv0)) orelse blk: {
        // `withcache-shim curl ARGS...` works too, as `python -m withcache_shim curl` does.
        if (argv.len > first) if (toolOf(mem.span(argv[first]))) |t| {
            if (mem.eql(u8, mem.span(argv[first]), @tagName(t))) {
                first += 1;
                break :blk t;
            }
        };
        die(2, usage, "", "");
    };
    const args = try gpa.alloc(Str, argv.len - first);
    for (args, argv[first..]) |*a, p| a.* = mem.span(p);

    const real = findRealTool(gpa, tool, argv0) catch |err| switch (err) {
        error.NotFound => {
            const name = if (tool == .curl) "curlwithcache: " else "wgetwithcache: ";
            const override = getenv(if (tool == .curl) "REAL_CURL" else "REAL_WGET") orelse "";
            if (override.len > 0) {
                const v = if (tool == .curl) "REAL_CURL=" else "REAL_WGET=";
                const what = try mem.concat(gpa, u8, &.{ v, override, " is not a runnable ", @tagName(tool) });
                die(127, name, what, "");
            }
            die(127, name, "no real ", if (tool == .curl) "curl found on PATH" else "wget found on PATH");
        },
        else => |e| return e,
    };

    // The final argv: the real tool's path, then the user's arguments (hits rewritten below).
    const out = try gpa.allocSentinel(?[*:0]const u8, args.len + 1, null);
    out[0] = real.ptr;
    for (argv[first..], 1..) |p, i| out[i] = p;

    if (explain) say(gpa, "tool:    {s} -> {s}\n", .{ @tagName(tool), real });
    if (pickServer(gpa, tool)) |server| {
        const decision = try findUrls(gpa, tool, args, server);
        if (explain) {
            say(gpa, "server:  {s}\n", .{server});
            if (decision.urls.len == 0) say(gpa, "decision: pass through untouched\n", .{});
        }
        for (decision.urls, decision.vias) |index, via| {
            const name = if (decision.wget_names) try wgetName(gpa, args[index]) else null;
            const target = try cacheUrl(gpa, server, args[index], name);
            if (explain) explainUrl(gpa, server, args[index], target, via);
            const answer = probe(gpa, tool, real, server, target, via);
            const hit = answer == .hit_cd or (answer == .hit and !decision.needs_cd);
            if (explain) say(gpa, "  probe:     {s}\n  rewritten: {s}\n", .{ answerName(answer), if (hit) "yes" else "no" });
            if (hit) {
                out[index + 1] = target.ptr;
            } else if (answer != .miss and answer != .hit) {
                break; // an unreachable host will not answer the next probe either
            }
        }
    } else |err| switch (err) {
        error.NoServer => if (explain) say(gpa, "server:  none (no *WITHCACHE_SERVER set): the tool runs untouched\n", .{}),
        else => |e| return e,
    }
    if (explain) {
        writeAll(1, "exec:   ");
        for (out[0 .. args.len + 1]) |word| {
            writeAll(1, " ");
            writeAll(1, mem.span(word.?));
        }
        writeAll(1, "\n");
        linux.exit_group(0);
    }

    const rc = linux.execve(real.ptr, out.ptr, envp);
    const name = if (tool == .curl) "curlwithcache: cannot run " else "wgetwithcache: cannot run ";
    const why = try mem.concat(gpa, u8, &.{ ": ", strerror(linux.errno(rc)) });
    die(126, name, real, why);
}

const usage = "usage: withcache-shim [--explain] curl|wget [ARGS...] (or run it as curl, curlwithcache, wget or wgetwithcache)";

/// probe.py's words for an answer.
fn answerName(kind: Kind) Str {
    return switch (kind) {
        .hit => "hit",
        .hit_cd => "hit+content-disposition",
        .miss => "miss",
        .unreachable_host => "unreachable",
    };
}

/// Print a formatted line to stdout (for --explain).
fn say(gpa: Alloc, comptime format: []const u8, values: anytype) void {
    writeAll(1, std.fmt.allocPrint(gpa, format, values) catch return);
}

/// --explain: a URL's cache URL, its route, and the breaker's state before its probe.
fn explainUrl(gpa: Alloc, server: Str, url: Str, target: Str, via: ?route.Via) void {
    say(gpa, "url:     {s}\n  cache URL: {s}\n", .{ url, target });
    if (via) |v| {
        say(gpa, "  route:     through the HTTP proxy {s}:{d}\n", .{ v.host, v.port });
    } else if (u.eqlLower(scheme(server), "https")) {
        say(gpa, "  route:     the tool's own (an https:// host is probed by the tool)\n", .{});
    } else say(gpa, "  route:     direct\n", .{});
    const key = if (via) |v| std.fmt.allocPrint(gpa, "{s} via {s}:{d}", .{ server, v.host, v.port }) catch server else server;
    const b = breaker.forEnv(gpa, &getenv, &u.strip, key) orelse {
        say(gpa, "  breaker:   off or unavailable: every call probes\n", .{});
        return;
    };
    const now = breaker.nowMs();
    const until = b.openUntil(now) orelse {
        say(gpa, "  breaker:   closed ({s})\n", .{b.path});
        return;
    };
    const es: std.time.epoch.EpochSeconds = .{ .secs = until / 1000 };
    const yd = es.getEpochDay().calculateYearDay();
    const md = yd.calculateMonthDay();
    const ds = es.getDaySeconds();
    say(gpa, "  breaker:   OPEN until {d}-{d:0>2}-{d:0>2} {d:0>2}:{d:0>2}:{d:0>2} UTC ({d} s from now): not probed ({s})\n", .{
        yd.year,                 md.month.numeric(),        md.day_index + 1,           ds.getHoursIntoDay(),
        ds.getMinutesIntoHour(), ds.getSecondsIntoMinute(), (until - now + 999) / 1000, b.path,
    });
}

fn toolOf(name: Str) ?Tool {
    if (mem.eql(u8, name, "curl") or mem.eql(u8, name, "curlwithcache")) return .curl;
    if (mem.eql(u8, name, "wget") or mem.eql(u8, name, "wgetwithcache")) return .wget;
    return null;
}

fn die(code: u8, a: Str, b: Str, c: Str) noreturn {
    if (a.len > 0) {
        for ([_]Str{ a, b, c, "\n" }) |part| writeAll(2, part);
    }
    linux.exit_group(code);
}

fn writeAll(fd: i32, data: Str) void {
    var rest = data;
    while (rest.len > 0) {
        const rc = linux.write(fd, rest.ptr, rest.len);
        switch (linux.errno(rc)) {
            .SUCCESS => rest = rest[rc..],
            .INTR => {},
            else => return,
        }
    }
}

fn strerror(e: linux.E) Str {
    return switch (e) {
        .ACCES => "Permission denied",
        .NOENT => "No such file or directory",
        .NOEXEC => "Exec format error",
        .@"2BIG" => "Argument list too long",
        .NOMEM => "Cannot allocate memory",
        .TXTBSY => "Text file busy",
        .LOOP => "Too many levels of symbolic links",
        .NOTDIR => "Not a directory",
        .ISDIR => "Is a directory",
        .NAMETOOLONG => "File name too long",
        .PERM => "Operation not permitted",
        else => "Unknown error",
    };
}

// --- environment -------------------------------------------------------------------------

/// The first `NAME=` entry, as os.environ keeps it.
fn getenv(name: Str) ?Str {
    var i: usize = 0;
    while (envp[i]) |entry| : (i += 1) {
        const e = mem.span(entry);
        if (e.len > name.len and e[name.len] == '=' and mem.eql(u8, e[0..name.len], name))
            return e[name.len + 1 ..];
    }
    return null;
}

/// realtool.pick_server: `$<TOOL>WITHCACHE_SERVER` beats `$WITHCACHE_SERVER`, empty is unset,
/// `host:port` means http, a scheme other than http(s) counts as unset.
fn pickServer(gpa: Alloc, tool: Tool) !Str {
    const names = [2]Str{ if (tool == .curl) "CURLWITHCACHE_SERVER" else "WGETWITHCACHE_SERVER", "WITHCACHE_SERVER" };
    var value: Str = "";
    for (names) |name| {
        value = u.strip(getenv(name) orelse "");
        if (value.len > 0) break;
    }
    if (value.len == 0) return error.NoServer;
    if (mem.find(u8, value, "://") == null) value = try mem.concat(gpa, u8, &.{ "http://", value });
    const head = value[0..mem.find(u8, value, "://").?];
    if (!u.eqlLower(head, "http") and !u.eqlLower(head, "https")) return error.NoServer;
    return mem.trimEnd(u8, value, "/");
}

// --- the real tool -------------------------------------------------------------------------

/// realtool.find_real_tool: `$REAL_<TOOL>` or the first `<tool>` on PATH that is not this
/// shim (by real path, compared with /proc/self/exe) nor a file named like a shim.
fn findRealTool(gpa: Alloc, tool: Tool, argv0: Str) ![:0]const u8 {
    const path = getenv("PATH") orelse "/bin:/usr/bin";
    const me = try selfExe(gpa, argv0, path);
    const override = getenv(if (tool == .curl) "REAL_CURL" else "REAL_WGET") orelse "";
    const name = if (override.len > 0) override else @tagName(tool);
    if (mem.indexOfScalar(u8, name, '/') != null) {
        const c = try gpa.dupeSentinel(u8, name, 0);
        if (try acceptable(gpa, c, me)) return c;
        return error.NotFound;
    }
    var dirs = mem.splitScalar(u8, path, ':');
    while (dirs.next()) |d| {
        const c = try join(gpa, if (d.len == 0) "." else d, name);
        if (try acceptable(gpa, c, me)) return c;
    }
    return error.NotFound;
}

fn acceptable(gpa: Alloc, candidate: [:0]const u8, me: Str) !bool {
    if (!isExecutableFile(candidate)) return false;
    const target = try realpath(gpa, candidate);
    if (mem.eql(u8, target, me)) return false;
    for (T.shim_names) |shim| if (mem.eql(u8, basename(target), shim)) return false;
    return true;
}

fn selfExe(gpa: Alloc, argv0: Str, path: Str) !Str {
    var buf: [4096]u8 = undefined;
    const rc = linux.readlink("/proc/self/exe", &buf, buf.len);
    if (linux.errno(rc) == .SUCCESS and rc < buf.len and rc > 0 and buf[0] == '/')
        return try gpa.dupe(u8, buf[0..rc]);
    // No /proc: resolve argv[0] as the Python shim does (a bare name was found on PATH).
    if (mem.indexOfScalar(u8, argv0, '/') != null) return realpath(gpa, try gpa.dupeSentinel(u8, argv0, 0));
    var dirs = mem.splitScalar(u8, path, ':');
    while (dirs.next()) |d| {
        const c = try join(gpa, if (d.len == 0) "." else d, argv0);
        if (isExecutableFile(c)) return realpath(gpa, c);
    }
    return "";
}

fn isExecutableFile(p: [:0]const u8) bool {
    var st: linux.Statx = undefined;
    const rc = linux.statx(linux.AT.FDCWD, p.ptr, 0, .{ .TYPE = true }, &st);
    if (linux.errno(rc) != .SUCCESS) return false;
    if (st.mode & linux.S.IFMT != linux.S.IFREG) return false;
    return linux.errno(linux.access(p.ptr, linux.X_OK)) == .SUCCESS;
}

/// os.path.join for a name without a slash.
fn join(gpa: Alloc, dir: Str, name: Str) ![:0]const u8 {
    const sep: Str = if (dir.len > 0 and dir[dir.len - 1] == '/') "" else "/";
    return mem.concatWithSentinel(gpa, u8, &.{ dir, sep, name }, 0);
}

fn basename(p: Str) Str {
    const cut = mem.lastIndexOfScalar(u8, p, '/') orelse return p;
    return p[cut + 1 ..];
}

/// os.path.realpath (non-strict): resolve every symlink, component by component.
fn realpath(gpa: Alloc, p: Str) !Str {
    var out: std.ArrayList(u8) = .empty; // the resolved prefix, "" for "/"
    var pending: Str = p;
    if (p.len == 0 or p[0] != '/') {
        var cwd: [4096]u8 = undefined;
        const rc = linux.getcwd(&cwd, cwd.len);
        if (linux.errno(rc) != .SUCCESS) return p;
        const n = mem.indexOfScalar(u8, &cwd, 0) orelse return p;
        pending = try mem.concat(gpa, u8, &.{ cwd[0..n], "/", p });
    }
    var hops: usize = 0;
    while (pending.len > 0) {
        const slash = mem.indexOfScalar(u8, pending, '/') orelse pending.len;
        const part = pending[0..slash];
        pending = if (slash < pending.len) pending[slash + 1 ..] else "";
        if (part.len == 0 or mem.eql(u8, part, ".")) continue;
        if (mem.eql(u8, part, "..")) {
            const cut = mem.lastIndexOfScalar(u8, out.items, '/') orelse 0;
            out.shrinkRetainingCapacity(cut);
            continue;
        }
        const before = out.items.len;
        try out.append(gpa, '/');
        try out.appendSlice(gpa, part);
        const z = try gpa.dupeSentinel(u8, out.items, 0);
        var buf: [4096]u8 = undefined;
        const rc = linux.readlink(z.ptr, &buf, buf.len);
        if (linux.errno(rc) != .SUCCESS) continue; // not a link (or missing): keep the name
        hops += 1;
        if (hops > 40) {
            try out.append(gpa, '/');
            try out.appendSlice(gpa, pending);
            break;
        }
        const link = buf[0..rc];
        if (link.len > 0 and link[0] == '/') {
            out.shrinkRetainingCapacity(0);
        } else {
            out.shrinkRetainingCapacity(before);
        }
        pending = try mem.concat(gpa, u8, &.{ link, "/", pending });
    }
    if (out.items.len == 0) return "/";
    return out.items;
}

// --- probing -------------------------------------------------------------------------------

const Kind = httpprobe.Kind;

/// probe.probe: while the breaker is open, unreachable at once; else an http:// server is
/// asked in process (httpprobe.zig), an https:// one with the real tool. A probe that could
/// not connect or timed out opens the breaker; one with an HTTP answer closes it.
fn probe(gpa: Alloc, tool: Tool, real: [:0]const u8, server: Str, target: [:0]const u8, via: ?route.Via) Kind {
    // probe.breaker_key: the server, and the proxy when the route goes through one.
    const key = if (via) |v|
        std.fmt.allocPrint(gpa, "{s} via {s}:{d}", .{ server, v.host, v.port }) catch server
    else
        server;
    const b = breaker.forEnv(gpa, &getenv, &u.strip, key);
    if (b) |br| if (br.beforeProbe(gpa, breaker.nowMs())) return .unreachable_host;
    var answer: httpprobe.Answer = undefined;
    // An http:// server with credentials in it is left to the tool, as in probe.py.
    if (httpprobe.splitHttpUrl(target) != null) {
        answer = httpprobe.head(gpa, target, if (via) |v| .{ .host = v.host, .port = v.port } else null);
    } else {
        const code = toolProbe(gpa, tool, real, target);
        const miss: u8 = if (tool == .curl) T.curl_miss_code else T.wget_miss_code;
        const down: []const u8 = if (tool == .curl) &T.curl_down_codes else &T.wget_down_codes;
        answer = .{
            .kind = if (code == 0) .hit else if (code == miss) .miss else .unreachable_host,
            .down = code >= 0 and mem.indexOfScalar(u8, down, @intCast(code)) != null,
        };
    }
    if (b) |br| {
        if (answer.down) {
            br.failed(gpa, breaker.nowMs());
        } else if (answer.kind != .unreachable_host) {
            br.succeeded();
        }
    }
    return answer.kind;
}

/// probe.tool_probe: a HEAD request with the real tool, stdio on /dev/null; its exit code
/// (-1 when it could not run or was killed).
fn toolProbe(gpa: Alloc, tool: Tool, real: [:0]const u8, target: [:0]const u8) i32 {
    const extra: []const Str = if (tool == .curl) &T.curl_probe_args else &T.wget_probe_args;
    const av = gpa.allocSentinel(?[*:0]const u8, extra.len + 2, null) catch return -1;
    av[0] = real.ptr;
    for (extra, 1..) |a, i| av[i] = (gpa.dupeSentinel(u8, a, 0) catch return -1).ptr;
    av[extra.len + 1] = target.ptr;

    const pid = linux.fork();
    if (linux.errno(pid) != .SUCCESS) return -1;
    if (pid == 0) {
        const rd = linux.open("/dev/null", .{ .ACCMODE = .RDONLY }, 0);
        const wr = linux.open("/dev/null", .{ .ACCMODE = .WRONLY }, 0);
        if (linux.errno(rd) != .SUCCESS or linux.errno(wr) != .SUCCESS) linux.exit_group(127);
        _ = linux.dup2(@intCast(rd), 0);
        _ = linux.dup2(@intCast(wr), 1);
        _ = linux.dup2(@intCast(wr), 2);
        _ = linux.execve(real.ptr, av.ptr, envp);
        linux.exit_group(127);
    }
    var status: i32 = 0;
    while (true) {
        const rc = linux.wait4(@intCast(pid), &status, 0, null);
        switch (linux.errno(rc)) {
            .SUCCESS => break,
            .INTR => continue,
            else => return -1,
        }
    }
    const s: u32 = @bitCast(status);
    if (!linux.W.IFEXITED(s)) return -1;
    return linux.W.EXITSTATUS(s);
}

// --- rules.find_urls ---------------------------------------------------------------------

const Opt = route.Opt;
const Url = struct { index: usize, segment: usize };
const Scan = struct {
    opts: std.ArrayList(Opt) = .empty,
    urls: std.ArrayList(Url) = .empty,
};

/// rules.Decision: the argument indexes to probe (none: pass through), whether a hit must
/// come with the origin's Content-Disposition, and whether wget names the file from the URL
/// (then the cache URL's last segment is wgetName()).
const Decision = struct {
    urls: []const usize = &.{},
    /// The HTTP proxy on the route to the cache-host, per URL (rules._find_routes).
    vias: []const ?route.Via = &.{},
    needs_cd: bool = false,
    wget_names: bool = false,
};

fn findUrls(gpa: Alloc, tool: Tool, args: []const Str, server: Str) !Decision {
    var scan: Scan = .{};
    const ok = switch (tool) {
        .curl => try scanCurl(gpa, args, &scan),
        .wget => try scanWget(gpa, args, getenv("POSIXLY_CORRECT") != null, &scan),
    };
    if (!ok) return .{};
    const pass = switch (tool) {
        .curl => curlPass(scan, args, server),
        .wget => wgetPass(scan, args),
    };
    if (pass) return .{};
    var out: std.ArrayList(usize) = .empty;
    for (scan.urls.items) |url| {
        const skip = switch (tool) {
            .curl => curlSkip(scan, args[url.index], server),
            .wget => wgetSkip(scan, args[url.index], server),
        };
        if (!skip) try out.append(gpa, url.index);
    }
    const from_headers = if (tool == .curl) T.names_from_headers_curl else T.names_from_headers_wget;
    var decision: Decision = .{ .urls = out.items, .wget_names = tool == .wget };
    if (out.items.len == 0) return decision;
    // rules._find_routes: an https:// server is probed by the tool, which sees no command-line
    // proxy options; an http:// one in process, through the tool's own route.
    if (u.eqlLower(scheme(server), "https")) {
        for (scan.opts.items) |opt| if (routeOption(gpa, tool, opt)) return .{};
        decision.vias = try gpa.alloc(?route.Via, out.items.len);
        @memset(@constCast(decision.vias), null);
    } else {
        const vias = try gpa.alloc(?route.Via, out.items.len);
        for (out.items, vias) |index, *via| {
            const r = switch (tool) {
                .curl => route.curlRoute(gpa, server, scan.opts.items, segmentOf(scan, index), &getenv),
                .wget => route.wgetRoute(gpa, server, scan.opts.items, &getenv),
            };
            if (!r.usable) return .{};
            via.* = r.via;
        }
        decision.vias = vias;
    }
    for (scan.opts.items) |opt| {
        if (opt.on and mem.eql(u8, opt.name, from_headers)) decision.needs_cd = true;
        if (mem.eql(u8, opt.name, "output-document")) decision.wget_names = false;
    }
    return decision;
}

fn segmentOf(scan: Scan, index: usize) usize {
    for (scan.urls.items) |url| if (url.index == index) return url.segment;
    return 0;
}

/// rules._ROUTE_OPTIONS / rules._routes: an option that changes the route to the cache-host.
fn routeOption(gpa: Alloc, tool: Tool, opt: Opt) bool {
    if (tool == .curl) return mem.eql(u8, opt.name, "proxy") or mem.eql(u8, opt.name, "noproxy");
    if (mem.eql(u8, opt.name, "proxy") or mem.eql(u8, opt.name, "no-proxy")) return true;
    if (!mem.eql(u8, opt.name, "execute")) return false;
    const command = route.wgetCommand(gpa, opt.value orelse "") orelse return false;
    return !mem.eql(u8, command.name, "robots");
}

fn inList(list: []const Str, word: Str) bool {
    for (list) |w| if (mem.eql(u8, w, word)) return true;
    return false;
}

fn curlKind(name: Str) ?T.CurlKind {
    for (T.curl_long) |e| if (mem.eql(u8, e.name, name)) return e.kind;
    return null;
}

fn wgetKind(name: Str) ?T.WgetKind {
    for (T.wget_long) |e| if (mem.eql(u8, e.name, name)) return e.kind;
    return null;
}

/// argscan.scan_curl; false when the scan fails (the command line passes through).
fn scanCurl(gpa: Alloc, args: []const Str, scan: *Scan) !bool {
    var segment: usize = 0;
    var options_end = false;
    var i: usize = 0;
    const n = args.len;
    while (i < n) {
        const arg = args[i];
        i += 1;
        if (options_end or arg.len == 0 or arg[0] != '-') {
            try scan.urls.append(gpa, .{ .index = i - 1, .segment = segment });
            continue;
        }
        if (mem.eql(u8, arg, "--")) {
            options_end = true;
            continue;
        }
        if (mem.startsWith(u8, arg, "--")) {
            const word = arg[2..];
            var name = word;
            var kind: T.CurlKind = undefined;
            var on = true;
            if (curlKind(word)) |k| {
                kind = k;
            } else if (mem.startsWith(u8, word, "no-") and curlKind(word[3..]) == .bool) {
                name = word[3..];
                kind = .bool;
                on = false;
            } else if (mem.startsWith(u8, word, T.curl_expand_prefix) and
                curlKind(word[T.curl_expand_prefix.len..]) == .value)
            {
                kind = .value;
            } else return false;
            var value: ?Str = null;
            if (kind == .value) {
                if (i >= n) return false;
                value = args[i];
                if (mem.eql(u8, name, "url")) try scan.urls.append(gpa, .{ .index = i, .segment = segment });
                i += 1;
            }
            try scan.opts.append(gpa, .{ .name = name, .value = value, .on = on, .segment = segment });
            if (mem.eql(u8, name, "next")) segment += 1;
            continue;
        }
        if (mem.eql(u8, arg, "-")) return false;
        var j: usize = 1;
        while (j < arg.len) : (j += 1) {
            const name = curlShort(arg[j]) orelse return false;
            if (curlKind(name) == .value) {
                var value = arg[j + 1 ..];
                if (value.len == 0) {
                    if (i >= n) return false;
                    value = args[i];
                    i += 1;
                }
                try scan.opts.append(gpa, .{ .name = name, .value = value, .on = true, .segment = segment });
                break;
            }
            try scan.opts.append(gpa, .{ .name = name, .value = null, .on = true, .segment = segment });
            if (mem.eql(u8, name, "next")) segment += 1;
        }
    }
    return true;
}

fn curlShort(letter: u8) ?Str {
    for (T.curl_short) |e| if (e.letter == letter) return e.name;
    return null;
}

/// argscan.scan_wget: GNU getopt_long, permuting unless POSIXLY_CORRECT is set.
fn scanWget(gpa: Alloc, args: []const Str, posixly_correct: bool, scan: *Scan) !bool {
    var options_end = false;
    var i: usize = 0;
    const n = args.len;
    while (i < n) {
        const arg = args[i];
        i += 1;
        if (options_end or arg.len == 0 or arg[0] != '-' or mem.eql(u8, arg, "-")) {
            try scan.urls.append(gpa, .{ .index = i - 1, .segment = 0 });
            options_end = options_end or posixly_correct;
            continue;
        }
        if (mem.eql(u8, arg, "--")) {
            options_end = true;
            continue;
        }
        if (mem.startsWith(u8, arg, "--")) {
            const rest = arg[2..];
            const eq = mem.indexOfScalar(u8, rest, '=');
            const name = if (eq) |e| rest[0..e] else rest;
            var attached: ?Str = if (eq) |e| rest[e + 1 ..] else null;
            const kind = wgetKind(name) orelse return false;
            switch (kind) {
                .flag => {
                    if (eq != null) return false;
                    try scan.opts.append(gpa, .{ .name = name, .value = null, .on = true, .segment = 0 });
                },
                .optional => try scan.opts.append(gpa, .{ .name = name, .value = attached, .on = wgetOn(attached), .segment = 0 }),
                .value => {
                    if (attached == null) {
                        if (i >= n) return false;
                        attached = args[i];
                        i += 1;
                    }
                    try scan.opts.append(gpa, .{ .name = name, .value = attached, .on = true, .segment = 0 });
                },
            }
            continue;
        }
        var j: usize = 1;
        while (j < arg.len) : (j += 1) {
            const entry = wgetShort(arg[j]) orelse return false;
            if (entry.value) {
                var value = arg[j + 1 ..];
                if (value.len == 0) {
                    if (i >= n) return false;
                    value = args[i];
                    i += 1;
                }
                try scan.opts.append(gpa, .{ .name = entry.name, .value = value, .on = true, .segment = 0 });
                break;
            }
            try scan.opts.append(gpa, .{ .name = entry.name, .value = null, .on = true, .segment = 0 });
        }
    }
    return true;
}

fn wgetShort(letter: u8) ?T.WgetShort {
    for (T.wget_short) |e| if (e.letter == letter) return e;
    return null;
}

fn wgetOn(value: ?Str) bool {
    const v = value orelse return true;
    return !(u.eqlLower(v, "off") or u.eqlLower(v, "no") or mem.eql(u8, v, "0"));
}

fn commonUrlPass(scan: Scan, args: []const Str) bool {
    if (scan.urls.items.len == 0) return true;
    for (scan.urls.items) |url| {
        const s = args[url.index];
        if (!isHttp(s) or mem.indexOfScalar(u8, authority(s), '@') != null) return true;
        if (credentialQuery(s)) return true;
    }
    return false;
}

/// urls.credential_param: whether any query parameter's name, read as the cache-host reads
/// it ('+' a space, %XX decoded, ASCII lower-cased), is credential-like: one of the
/// credential names or containing a credential part, and not a signature parameter.
fn credentialQuery(url: Str) bool {
    var rest = url;
    if (mem.indexOfScalar(u8, rest, '#')) |h| rest = rest[0..h];
    const q = mem.indexOfScalar(u8, rest, '?') orelse return false;
    var params = mem.splitScalar(u8, rest[q + 1 ..], '&');
    while (params.next()) |param| {
        const raw = param[0 .. mem.indexOfScalar(u8, param, '=') orelse param.len];
        // Out of memory: pass through, the safe answer.
        const name = paramName(arena_state.allocator(), raw) catch return true;
        if (inList(&T.signature_params, name)) continue;
        if (inList(&T.credential_params, name)) return true;
        for (T.credential_parts) |part| if (mem.find(u8, name, part) != null) return true;
    }
    return false;
}

fn paramName(gpa: Alloc, raw: Str) !Str {
    const out = try gpa.alloc(u8, raw.len);
    var n: usize = 0;
    var i: usize = 0;
    while (i < raw.len) : (n += 1) {
        if (raw[i] == '%' and i + 2 < raw.len and isHex(raw[i + 1]) and isHex(raw[i + 2])) {
            const byte = std.fmt.parseInt(u8, raw[i + 1 .. i + 3], 16) catch unreachable;
            out[n] = std.ascii.toLower(byte);
            i += 3;
        } else {
            out[n] = std.ascii.toLower(if (raw[i] == '+') ' ' else raw[i]);
            i += 1;
        }
    }
    return out[0..n];
}

fn curlPass(scan: Scan, args: []const Str, server: Str) bool {
    for (scan.opts.items) |opt| {
        if (opt.on and inList(&T.curl_pass, opt.name)) return true;
        if (mem.startsWith(u8, opt.name, "expand-")) return true;
        if (mem.eql(u8, opt.name, "request") and !inList(&T.plain_methods, opt.value orelse "\x00"))
            return true;
        if (mem.eql(u8, opt.name, "header") and secretHeader(opt.value)) return true;
    }
    if (!curlProtoAllows(scan.opts.items, scheme(server))) return true;
    if (commonUrlPass(scan, args)) return true;
    for (scan.urls.items) |url| {
        if (mem.indexOfAny(u8, args[url.index], "[]{}") == null) continue;
        var globoff = false;
        for (scan.opts.items) |opt| {
            if (opt.segment == url.segment and mem.eql(u8, opt.name, "globoff")) globoff = opt.on;
        }
        if (!globoff) return true;
    }
    return false;
}

fn curlSkip(scan: Scan, url: Str, server: Str) bool {
    if (onServer(url, server)) return true;
    for (scan.opts.items) |opt| {
        if (opt.on and (mem.eql(u8, opt.name, "remote-name") or mem.eql(u8, opt.name, "remote-name-all")))
            return lastSegment(url).len == 0;
    }
    return false;
}

fn wgetPass(scan: Scan, args: []const Str) bool {
    for (scan.opts.items) |opt| {
        if (opt.on and inList(&T.wget_pass, opt.name)) return true;
        if (mem.eql(u8, opt.name, "method")) {
            const v = opt.value orelse "";
            var plain = false;
            for (T.plain_methods) |m| plain = plain or u.eqlUpper(v, m);
            if (!plain) return true;
        }
        if (mem.eql(u8, opt.name, "header") and secretHeader(opt.value)) return true;
        if (mem.eql(u8, opt.name, "execute")) {
            const command = route.wgetCommand(arena_state.allocator(), opt.value orelse "") orelse return true;
            if (!inList(&T.wget_commands, command.name)) return true;
        }
    }
    return commonUrlPass(scan, args);
}

fn wgetSkip(scan: Scan, url: Str, server: Str) bool {
    if (onServer(url, server)) return true;
    for (scan.opts.items) |opt| if (mem.eql(u8, opt.name, "output-document")) return false;
    for (scan.opts.items) |opt| if (inList(&T.wget_other_naming, opt.name)) return true;
    if (dotSegment(url)) return true;
    // Out of memory: skip the URL, the safe answer.
    return escapesAControlByte(wgetName(arena_state.allocator(), url) catch return true);
}

/// urls.escapes_a_control_byte: %00-%1F or %7F in a quoted segment.
fn escapesAControlByte(segment: Str) bool {
    var i: usize = 0;
    while (mem.indexOfScalarPos(u8, segment, i, '%')) |at| : (i = at + 1) {
        if (at + 2 >= segment.len) return false;
        const hi = segment[at + 1];
        const lo = segment[at + 2];
        if ((hi == '0' or hi == '1') and isHex(lo)) return true;
        if (hi == '7' and (lo == 'f' or lo == 'F')) return true;
    }
    return false;
}

/// rules._secret_header: read from a file (@), or any line names a credential/cookie/Host.
fn secretHeader(value: ?Str) bool {
    const v = value orelse return false;
    if (v.len == 0) return false;
    if (v[0] == '@') return true;
    var lines = u.Lines{ .rest = v };
    while (lines.next()) |line| {
        var name = line;
        if (mem.indexOfScalar(u8, name, ':')) |c| name = name[0..c];
        if (mem.indexOfScalar(u8, name, ';')) |c| name = name[0..c];
        name = u.strip(name);
        for (T.secret_headers) |h| if (u.eqlLowerUnicode(name, h)) return true;
    }
    return false;
}

/// rules._curl_proto_allows: both readings of repeated --proto must allow the scheme.
fn curlProtoAllows(opts: []const Opt, s: Str) bool {
    var fresh = true;
    var cumulative = true;
    for (opts) |opt| {
        if (!mem.eql(u8, opt.name, "proto")) continue;
        const spec = opt.value orelse continue;
        fresh = applyProto(true, spec, s) orelse return false;
        cumulative = applyProto(cumulative, spec, s) orelse return false;
    }
    return fresh and cumulative;
}

fn applyProto(start: bool, spec: Str, s: Str) ?bool {
    var allowed = start;
    var tokens = mem.splitScalar(u8, spec, ',');
    while (tokens.next()) |tok| {
        if (tok.len == 0) continue;
        var token = tok;
        var action: u8 = '+';
        while (token.len > 0) {
            const first = u.firstChar(token);
            if (u.isAlnum(first.cp)) break;
            if (token[0] != '+' and token[0] != '-' and token[0] != '=') return null;
            action = token[0];
            token = token[1..];
        }
        if (token.len == 0) return null;
        if (u.eqlLower(token, "all") or (s.len > 0 and u.eqlLower(token, s))) {
            allowed = action != '-';
        } else if (action == '=') {
            allowed = false;
        }
    }
    return allowed;
}

// --- urls ----------------------------------------------------------------------------------

fn afterScheme(url: Str) ?Str {
    const i = mem.find(u8, url, "://") orelse return null;
    return url[i + 3 ..];
}

/// urls.scheme: the scheme as written ('' for none); compare it case-insensitively.
fn scheme(url: Str) Str {
    const i = mem.find(u8, url, "://") orelse return "";
    const head = url[0..i];
    if (!u.allAlnum(head)) return "";
    return head;
}

fn authority(url: Str) Str {
    const rest = afterScheme(url) orelse return "";
    const cut = mem.indexOfAny(u8, rest, "/?#") orelse rest.len;
    return rest[0..cut];
}

fn isHttp(url: Str) bool {
    const s = scheme(url);
    return (u.eqlLower(s, "http") or u.eqlLower(s, "https")) and authority(url).len > 0;
}

fn rawLastSegment(url: Str) Str {
    var rest = afterScheme(url) orelse "";
    if (mem.indexOfScalar(u8, rest, '#')) |h| rest = rest[0..h];
    const cut = mem.indexOfAny(u8, rest, "/?") orelse rest.len;
    var path = rest[cut..];
    if (mem.indexOfScalar(u8, path, '?')) |q| path = path[0..q];
    return path[(if (mem.lastIndexOfScalar(u8, path, '/')) |s| s + 1 else 0)..];
}

fn dotSegment(url: Str) bool {
    const seg = rawLastSegment(url);
    return mem.eql(u8, seg, ".") or mem.eql(u8, seg, "..");
}

fn lastSegment(url: Str) Str {
    return if (dotSegment(url)) "" else rawLastSegment(url);
}

/// urls.wget_name: the cache URL's last segment from which wget names the file as it would
/// for `url` (last segment or index.html, then '?' and the query when there is one).
fn wgetName(gpa: Alloc, url: Str) !Str {
    const rest = url[0 .. mem.indexOfScalar(u8, url, '#') orelse url.len];
    const seg = lastSegment(url);
    var name: Str = if (seg.len > 0) seg else "index.html";
    if (mem.indexOfScalar(u8, rest, '?')) |q| name = try mem.concat(gpa, u8, &.{ name, rest[q..] });
    var out: std.ArrayList(u8) = .empty;
    try quoteSegment(gpa, &out, name);
    return out.items;
}

fn hasQuery(url: Str) bool {
    const end = mem.indexOfScalar(u8, url, '#') orelse url.len;
    return mem.indexOfScalar(u8, url[0..end], '?') != null;
}

fn onServer(url: Str, server: Str) bool {
    const server_scheme = server[0 .. mem.find(u8, server, "://") orelse server.len];
    const s = scheme(url);
    // Python compares the url's lower-cased scheme with the server's.
    if (!u.eqlLowerBoth(s, server_scheme)) return false;
    return u.eqlLowerBoth(authority(url), authority(server));
}

const segment_safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@";

/// urls.cache_url: <server>/b/<unpadded url-safe base64 of the URL>/<name>, the name being
/// the quoted basename unless given.
fn cacheUrl(gpa: Alloc, server: Str, url: Str, name: ?Str) ![:0]const u8 {
    var out: std.ArrayList(u8) = .empty;
    try out.appendSlice(gpa, server);
    try out.appendSlice(gpa, "/b/");
    const enc = std.base64.url_safe_no_pad.Encoder;
    const start = out.items.len;
    try out.resize(gpa, start + enc.calcSize(url.len));
    _ = enc.encode(out.items[start..], url);
    try out.append(gpa, '/');
    if (name) |n| {
        try out.appendSlice(gpa, n);
    } else {
        const seg = lastSegment(url);
        if (seg.len == 0) try out.appendSlice(gpa, "download");
        try quoteSegment(gpa, &out, seg);
    }
    return out.toOwnedSliceSentinel(gpa, 0);
}

/// urls.quote_segment: keep URL-safe bytes and valid %XX escapes, percent-encode the rest.
fn quoteSegment(gpa: Alloc, out: *std.ArrayList(u8), seg: Str) !void {
    var i: usize = 0;
    while (i < seg.len) : (i += 1) {
        const c = seg[i];
        if (mem.indexOfScalar(u8, segment_safe, c) != null) {
            try out.append(gpa, c);
        } else if (c == '%' and i + 2 < seg.len and isHex(seg[i + 1]) and isHex(seg[i + 2])) {
            try out.appendSlice(gpa, seg[i .. i + 3]);
            i += 2;
        } else {
            const hex = "0123456789ABCDEF";
            try out.appendSlice(gpa, &.{ '%', hex[c >> 4], hex[c & 15] });
        }
    }
}

fn isHex(c: u8) bool {
    return std.ascii.isHex(c);
}
