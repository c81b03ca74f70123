//! route.py in Zig: the route curl or wget will take to the cache-host (direct, or through an
//! HTTP proxy), decided by each tool's own rules, so the probe takes the same one.
const std = @import("std");
const mem = std.mem;
const T = @import("tables.zig");

const Str = []const u8;
const Alloc = mem.Allocator;

pub const Opt = struct { name: Str, value: ?Str, on: bool, segment: usize };
pub const Via = struct { host: Str, port: u16 };
/// `usable` false: a route the probe cannot take (the command line passes through).
pub const Route = struct { via: ?Via = null, usable: bool = true };

pub const Env = *const fn (Str) ?Str;

const c_space = " \t\n\x0b\x0c\r";

pub fn serverHost(server: Str) Str {
    const rest = server[(mem.find(u8, server, "://") orelse return "") + 3 ..];
    const authority = rest[0 .. mem.indexOfScalar(u8, rest, '/') orelse rest.len];
    if (authority.len > 0 and authority[0] == '[') {
        const end = mem.indexOfScalar(u8, authority, ']') orelse return authority;
        return authority[1..end];
    }
    return authority[0 .. mem.lastIndexOfScalar(u8, authority, ':') orelse authority.len];
}

fn envValue(getenv: Env, name: Str) ?Str {
    const v = getenv(name) orelse return null;
    return if (v.len > 0) v else null;
}

fn schemeOf(server: Str) Str {
    return server[0 .. mem.find(u8, server, "://") orelse 0];
}

// --- curl -------------------------------------------------------------------------------------

pub fn curlRoute(gpa: Alloc, server: Str, opts: []const Opt, segment: usize, getenv: Env) Route {
    const https = std.ascii.eqlIgnoreCase(schemeOf(server), "https");
    const host = serverHost(server);
    var proxy_opt: ?Str = null;
    var noproxy_opt: ?Str = null;
    for (opts) |opt| {
        if (opt.segment != segment) continue;
        if (mem.eql(u8, opt.name, "proxy")) proxy_opt = opt.value orelse "";
        if (mem.eql(u8, opt.name, "noproxy")) noproxy_opt = opt.value orelse "";
    }
    const no_proxy = noproxy_opt orelse envValue(getenv, "no_proxy") orelse envValue(getenv, "NO_PROXY");
    if (curlNoproxy(host, no_proxy)) return .{};
    if (proxy_opt) |p| {
        if (p.len == 0) return .{};
        return parseProxy(p, 1080);
    }
    _ = gpa;
    const found = if (https)
        envValue(getenv, "https_proxy") orelse envValue(getenv, "HTTPS_PROXY")
    else
        envValue(getenv, "http_proxy");
    const proxy = found orelse envValue(getenv, "all_proxy") orelse envValue(getenv, "ALL_PROXY") orelse return .{};
    return parseProxy(proxy, 1080);
}

/// route.curl_noproxy: curl 7.88's Curl_check_noproxy.
pub fn curlNoproxy(name_in: Str, no_proxy_in: ?Str) bool {
    const no_proxy = no_proxy_in orelse return false;
    if (name_in.len == 0 or no_proxy.len == 0) return false;
    if (mem.eql(u8, no_proxy, "*")) return true;
    var name = name_in;
    const ipv4 = inetPton4(name) != null;
    if (!ipv4 and name[name.len - 1] == '.') name = name[0 .. name.len - 1];
    var tokens = mem.tokenizeAny(u8, no_proxy, " \t,");
    while (tokens.next()) |tok| {
        var token = tok;
        if (ipv4) {
            var bits: i64 = 0;
            var address = token;
            if (mem.indexOfScalar(u8, token, '/')) |slash| {
                bits = atoi(token[slash + 1 ..]);
                address = token[0..slash];
            }
            if (cidr4(name, address, bits)) return true;
            continue;
        }
        if (token[token.len - 1] == '.') token = token[0 .. token.len - 1];
        if (token.len > 0 and token[0] == '.') token = token[1..];
        const n = name.len;
        const t = token.len;
        if (t == n and std.ascii.eqlIgnoreCase(token, name)) return true;
        if (t < n and name[n - t - 1] == '.' and std.ascii.eqlIgnoreCase(name[n - t ..], token)) return true;
    }
    return false;
}

/// inet_pton(AF_INET): a dotted quad, octets 0-255 without leading zeros.
pub fn inetPton4(text: Str) ?u32 {
    var octets: u32 = 0;
    var value: u32 = 0;
    var result: u32 = 0;
    var saw_digit = false;
    for (text) |c| {
        if (std.ascii.isDigit(c)) {
            if (saw_digit and value == 0) return null;
            value = value * 10 + (c - '0');
            if (value > 255) return null;
            if (!saw_digit) {
                octets += 1;
                if (octets > 4) return null;
                saw_digit = true;
            }
        } else if (c == '.' and saw_digit) {
            if (octets == 4) return null;
            result = (result << 8) | value;
            value = 0;
            saw_digit = false;
        } else return null;
    }
    if (octets < 4 or !saw_digit) return null;
    return (result << 8) | value;
}

/// C's atoi, as route._atoi.
fn atoi(text: Str) i64 {
    var s = mem.trimStart(u8, text, c_space);
    var negative = false;
    if (s.len > 0 and (s[0] == '-' or s[0] == '+')) {
        negative = s[0] == '-';
        s = s[1..];
    }
    var n: i64 = 0;
    for (s) |c| {
        if (!std.ascii.isDigit(c)) break;
        n = n *| 10 +| (c - '0');
    }
    return if (negative) -n else n;
}

fn cidr4(address: Str, network: Str, bits: i64) bool {
    const a = inetPton4(address) orelse return false;
    const n = inetPton4(network) orelse return false;
    if (bits < 0 or bits > 32) return false;
    if (bits != 0 and bits != 32) {
        const mask: u32 = @truncate(@as(u64, 0xffffffff) << @intCast(32 - bits));
        return (a ^ n) & mask == 0;
    }
    return a == n;
}

// --- wget -------------------------------------------------------------------------------------

pub const Command = struct { name: Str, value: Str };

/// route.wget_command: an `-e` command as (name without '-'/'_', lower-cased; value).
pub fn wgetCommand(gpa: Alloc, text: Str) ?Command {
    const eq = mem.indexOfScalar(u8, text, '=') orelse return null;
    const raw = mem.trim(u8, text[0..eq], c_space);
    if (raw.len == 0) return null;
    const name = gpa.alloc(u8, raw.len) catch return null;
    var n: usize = 0;
    for (raw) |c| {
        if (!(std.ascii.isAlphanumeric(c) or c == '-' or c == '_')) return null;
        if (c == '-' or c == '_') continue;
        name[n] = std.ascii.toLower(c);
        n += 1;
    }
    return .{ .name = name[0..n], .value = mem.trim(u8, text[eq + 1 ..], c_space) };
}

fn wgetOn(value: ?Str) bool {
    const v = value orelse return true;
    return !(std.ascii.eqlIgnoreCase(v, "off") or std.ascii.eqlIgnoreCase(v, "no") or mem.eql(u8, v, "0"));
}

pub fn wgetRoute(gpa: Alloc, server: Str, opts: []const Opt, getenv: Env) Route {
    const scheme = schemeOf(server);
    const https = std.ascii.eqlIgnoreCase(scheme, "https");
    const host = serverHost(server);
    var use_proxy = true;
    var no_proxy: std.ArrayList(Str) = .empty;
    if (envValue(getenv, "no_proxy")) |v| sepstring(gpa, &no_proxy, v);
    var proxy_opt: ?Str = null;
    for (opts) |opt| {
        if (mem.eql(u8, opt.name, "proxy")) {
            use_proxy = wgetOn(opt.value);
        } else if (mem.eql(u8, opt.name, "no-proxy")) {
            use_proxy = false;
        } else if (mem.eql(u8, opt.name, "execute")) {
            const command = wgetCommand(gpa, opt.value orelse continue) orelse continue;
            if (mem.eql(u8, command.name, "useproxy")) {
                use_proxy = wgetOn(command.value);
            } else if (mem.eql(u8, command.name, "noproxy")) {
                if (command.value.len > 0) sepstring(gpa, &no_proxy, command.value) else no_proxy.clearRetainingCapacity();
            } else if (mem.eql(u8, command.name, if (https) "httpsproxy" else "httpproxy")) {
                proxy_opt = command.value;
            }
        }
    }
    if (!use_proxy) return .{};
    if (wgetSufmatch(no_proxy.items, host)) return .{};
    const proxy = proxy_opt orelse (getenv(if (https) "https_proxy" else "http_proxy") orelse "");
    if (proxy.len == 0) return .{};
    return parseProxy(proxy, 80);
}

/// wget's sepstring(): split at commas, skipping the blanks after each comma.
fn sepstring(gpa: Alloc, out: *std.ArrayList(Str), text: Str) void {
    var parts = mem.splitScalar(u8, text, ',');
    var first = true;
    while (parts.next()) |part| {
        out.append(gpa, if (first) part else mem.trimStart(u8, part, c_space)) catch return;
        first = false;
    }
}

/// route.wget_sufmatch: wget 1.21.3's sufmatch().
pub fn wgetSufmatch(patterns: []const Str, host: Str) bool {
    for (patterns) |pattern| {
        if (pattern.len == 0 or pattern.len > host.len) continue;
        if (!std.ascii.eqlIgnoreCase(host[host.len - pattern.len ..], pattern)) continue;
        if (pattern.len == host.len or host[host.len - pattern.len - 1] == '.' or pattern[0] == '.') return true;
    }
    return false;
}

// --- proxy URLs -------------------------------------------------------------------------------

/// route._proxy: an `http://` proxy without credentials, or an unusable route.
fn parseProxy(value: Str, default_port: u16) Route {
    const bad: Route = .{ .usable = false };
    var rest = value;
    if (mem.find(u8, value, "://")) |sep| {
        if (!std.ascii.eqlIgnoreCase(value[0..sep], "http")) return bad;
        rest = value[sep + 3 ..];
    }
    const authority = rest[0 .. mem.indexOfScalar(u8, rest, '/') orelse rest.len];
    if (mem.indexOfScalar(u8, authority, '@') != null) return bad;
    var host: Str = undefined;
    var port_text: Str = "";
    if (authority.len > 0 and authority[0] == '[') {
        const end = mem.indexOfScalar(u8, authority, ']') orelse return bad;
        host = authority[1..end];
        if (end > 0 and end + 2 <= authority.len) port_text = authority[end + 2 ..];
    } else {
        const colon = mem.indexOfScalar(u8, authority, ':');
        host = authority[0 .. colon orelse authority.len];
        if (colon) |c| port_text = authority[c + 1 ..];
    }
    if (host.len == 0) return bad;
    var port: u32 = default_port;
    if (port_text.len > 0) {
        for (port_text) |c| if (!std.ascii.isDigit(c)) return bad;
        port = std.fmt.parseInt(u32, port_text, 10) catch return bad;
    }
    if (port == 0 or port > 65535) return bad;
    return .{ .via = .{ .host = host, .port = @intCast(port) } };
}
