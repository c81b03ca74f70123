//! httpprobe.py in Zig: probe an `http://` cache-host in process with one HTTP/1.1 HEAD.
//!
//! The same budget (tables.probe_connect_ms to open a connection over all the name's
//! addresses, tables.probe_budget_ms in all), the same outcomes: 2xx hit (with the origin's
//! Content-Disposition when X-Withcache-Origin-Headers lists it), 4xx/5xx miss, anything
//! else unreachable; no connection, a reset or silence within the budget is also `down`.
//! Names are resolved with std.Io.net (/etc/hosts, then DNS from /etc/resolv.conf); sockets
//! are raw non-blocking syscalls with poll, like the rest of the shim.
const std = @import("std");
const linux = std.os.linux;
const mem = std.mem;
const Io = std.Io;
const T = @import("tables.zig");

const Str = []const u8;

pub const Kind = enum { hit, hit_cd, miss, unreachable_host };
pub const Answer = struct { kind: Kind, down: bool = false };
pub const Via = struct { host: Str, port: u16 };

pub const Parts = struct { host: Str, port: u16, authority: Str, path: Str };

/// httpprobe.split_http_url: null for what the probe does not handle.
pub fn splitHttpUrl(url: Str) ?Parts {
    const sep = mem.find(u8, url, "://") orelse return null;
    if (!std.ascii.eqlIgnoreCase(url[0..sep], "http")) return null;
    const rest = url[sep + 3 ..];
    const cut = mem.indexOfAny(u8, rest, "/?#") orelse rest.len;
    const authority = rest[0..cut];
    var path = rest[cut..];
    if (mem.indexOfScalar(u8, path, '#')) |h| path = path[0..h];
    if (mem.indexOfScalar(u8, authority, '@') != null or authority.len == 0) return null;
    var host = authority;
    var port_text: Str = "";
    if (authority[0] == '[') {
        const end = mem.indexOfScalar(u8, authority, ']') orelse return null;
        host = authority[1..end];
        const after = authority[end + 1 ..];
        if (after.len > 0) {
            if (after[0] != ':') return null;
            port_text = after[1..];
        }
    } else if (mem.lastIndexOfScalar(u8, authority, ':')) |c| {
        host = authority[0..c];
        port_text = authority[c + 1 ..];
    }
    var port: u16 = 80;
    if (port_text.len > 0) {
        for (port_text) |c| if (!std.ascii.isDigit(c)) return null;
        const n = std.fmt.parseInt(u32, port_text, 10) catch return null;
        if (n == 0 or n > 65535) return null;
        port = @intCast(n);
    }
    if (host.len == 0) return null;
    for (host) |c| {
        if (!(std.ascii.isAlphanumeric(c) or mem.indexOfScalar(u8, "-._:%", c) != null)) return null;
    }
    return .{ .host = host, .port = port, .authority = authority, .path = path };
}

fn nowMs() i64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    return @as(i64, ts.sec) * 1000 + @divTrunc(@as(i64, ts.nsec), 1_000_000);
}

/// A HEAD of `target` (a cache URL), directly or through the HTTP proxy `via`.
pub fn head(gpa: mem.Allocator, target: Str, via: ?Via) Answer {
    const parts = splitHttpUrl(target) orelse return .{ .kind = .unreachable_host };
    const started = nowMs();
    const request_target = if (via != null) target[0 .. mem.indexOfScalar(u8, target, '#') orelse target.len] else if (parts.path.len == 0) "/" else parts.path;
    const host = if (via) |v| v.host else parts.host;
    const port = if (via) |v| v.port else parts.port;
    const fd = connect(host, port, started + T.probe_connect_ms) orelse
        return .{ .kind = .unreachable_host, .down = true };
    defer _ = linux.close(fd);
    const request = mem.concat(gpa, u8, &.{
        "HEAD ",                                                                      request_target, " HTTP/1.1\r\nHost: ", parts.authority,
        "\r\nUser-Agent: withcache-shim\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    }) catch return .{ .kind = .unreachable_host };
    return exchange(fd, request, started + T.probe_budget_ms);
}

const max_addresses = 16;

fn connect(host: Str, port: u16, deadline: i64) ?i32 {
    var addresses: [max_addresses]Io.net.IpAddress = undefined;
    const n = resolve(host, port, &addresses);
    for (addresses[0..n], 0..) |address, i| {
        const left = deadline - nowMs();
        if (left <= 0) return null;
        const share = @divTrunc(left, @as(i64, @intCast(n - i)));
        if (connectOne(address, @max(share, 1))) |fd| return fd;
    }
    return null;
}

fn resolve(host: Str, port: u16, out: *[max_addresses]Io.net.IpAddress) usize {
    if (Io.net.IpAddress.parse(host, port)) |address| {
        out[0] = address;
        return 1;
    } else |_| {}
    const name = Io.net.HostName.init(host) catch return 0;
    const io = Io.Threaded.global_single_threaded.io();
    var buffer: [max_addresses]Io.net.HostName.LookupResult = undefined;
    var queue: Io.Queue(Io.net.HostName.LookupResult) = .init(&buffer);
    name.lookup(io, &queue, .{ .port = port }) catch return 0;
    var n: usize = 0;
    while (queue.getOne(io)) |result| switch (result) {
        .address => |address| if (n < max_addresses) {
            out[n] = address;
            n += 1;
        },
        .canonical_name => {},
    } else |_| {}
    return n;
}

fn connectOne(address: Io.net.IpAddress, timeout_ms: i64) ?i32 {
    var storage: linux.sockaddr.storage = undefined;
    var len: linux.socklen_t = undefined;
    var family: u32 = undefined;
    switch (address) {
        .ip4 => |a| {
            const sa: *linux.sockaddr.in = @ptrCast(&storage);
            sa.* = .{ .port = mem.nativeToBig(u16, a.port), .addr = @bitCast(a.bytes) };
            len = @sizeOf(linux.sockaddr.in);
            family = linux.AF.INET;
        },
        .ip6 => |a| {
            const sa: *linux.sockaddr.in6 = @ptrCast(&storage);
            sa.* = .{ .port = mem.nativeToBig(u16, a.port), .flowinfo = a.flow, .addr = a.bytes, .scope_id = 0 };
            len = @sizeOf(linux.sockaddr.in6);
            family = linux.AF.INET6;
        },
    }
    const rc = linux.socket(family, linux.SOCK.STREAM | linux.SOCK.CLOEXEC | linux.SOCK.NONBLOCK, 0);
    if (linux.errno(rc) != .SUCCESS) return null;
    const fd: i32 = @intCast(rc);
    const c = linux.connect(fd, &storage, len);
    switch (linux.errno(c)) {
        .SUCCESS => return fd,
        .INPROGRESS, .INTR => {},
        else => {
            _ = linux.close(fd);
            return null;
        },
    }
    if (!waitFor(fd, linux.POLL.OUT, nowMs() + timeout_ms)) {
        _ = linux.close(fd);
        return null;
    }
    var err: i32 = 0;
    var err_len: linux.socklen_t = @sizeOf(i32);
    const g = linux.getsockopt(fd, linux.SOL.SOCKET, linux.SO.ERROR, @ptrCast(&err), &err_len);
    if (linux.errno(g) != .SUCCESS or err != 0) {
        _ = linux.close(fd);
        return null;
    }
    return fd;
}

/// Poll `fd` for `events` until the deadline; false on timeout or error.
fn waitFor(fd: i32, events: i16, deadline: i64) bool {
    while (true) {
        const left = deadline - nowMs();
        if (left <= 0) return false;
        var fds = [1]linux.pollfd{.{ .fd = fd, .events = events }};
        const rc = linux.poll(&fds, 1, @intCast(@min(left, std.math.maxInt(i32))));
        switch (linux.errno(rc)) {
            .SUCCESS => if (rc > 0) return true,
            .INTR => {},
            else => return false,
        }
    }
}

var head_buffer: [T.probe_max_head]u8 = undefined;

fn exchange(fd: i32, request: Str, deadline: i64) Answer {
    var rest = request;
    while (rest.len > 0) {
        if (!waitFor(fd, linux.POLL.OUT, deadline)) return .{ .kind = .unreachable_host, .down = true };
        const rc = linux.sendto(fd, rest.ptr, rest.len, linux.MSG.NOSIGNAL, null, 0);
        switch (linux.errno(rc)) {
            .SUCCESS => rest = rest[rc..],
            .INTR, .AGAIN => {},
            else => return .{ .kind = .unreachable_host, .down = true },
        }
    }
    var n: usize = 0;
    while (mem.find(u8, head_buffer[0..n], "\r\n\r\n") == null and
        mem.find(u8, head_buffer[0..n], "\n\n") == null and n < head_buffer.len)
    {
        if (!waitFor(fd, linux.POLL.IN, deadline)) return .{ .kind = .unreachable_host, .down = true };
        const rc = linux.read(fd, head_buffer[n..].ptr, head_buffer.len - n);
        switch (linux.errno(rc)) {
            .SUCCESS => {
                if (rc == 0) break;
                n += rc;
            },
            .INTR, .AGAIN => {},
            else => {
                if (n == 0) return .{ .kind = .unreachable_host, .down = true };
                break;
            },
        }
    }
    return parseHead(head_buffer[0..n]);
}

const whitespace = " \t\n\r\x0b\x0c";

/// httpprobe.parse_head.
pub fn parseHead(data: Str) Answer {
    if (data.len == 0) return .{ .kind = .unreachable_host, .down = true };
    const head_end = mem.find(u8, data, "\r\n\r\n") orelse data.len;
    var lines = mem.splitScalar(u8, data[0..head_end], '\n');
    const status_line = mem.trimEnd(u8, lines.first(), "\r");
    var words = mem.splitScalar(u8, status_line, ' ');
    const version = words.first();
    const code_text = words.next() orelse return .{ .kind = .unreachable_host };
    if (!mem.eql(u8, version, "HTTP/1.0") and !mem.eql(u8, version, "HTTP/1.1"))
        return .{ .kind = .unreachable_host };
    if (code_text.len != 3) return .{ .kind = .unreachable_host };
    for (code_text) |c| if (!std.ascii.isDigit(c)) return .{ .kind = .unreachable_host };
    const code = (code_text[0] - '0');
    if (code == 4 or code == 5) return .{ .kind = .miss };
    if (code != 2) return .{ .kind = .unreachable_host };
    while (lines.next()) |line| {
        const colon = mem.indexOfScalar(u8, line, ':') orelse continue;
        const name = mem.trim(u8, line[0..colon], whitespace);
        if (!std.ascii.eqlIgnoreCase(name, T.origin_headers_field)) continue;
        var items = mem.splitScalar(u8, line[colon + 1 ..], ',');
        while (items.next()) |item| {
            if (std.ascii.eqlIgnoreCase(mem.trim(u8, item, whitespace), T.hit_cd_header))
                return .{ .kind = .hit_cd };
        }
    }
    return .{ .kind = .hit };
}
