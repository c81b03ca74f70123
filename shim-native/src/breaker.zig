//! breaker.py in Zig: the same per-user state file, rules and format, so the Python and the
//! native shim share one breaker.
//!
//!     withcache-breaker 1 <failures> <open-until, Unix ms> <key>\n
//!
//! in `$XDG_RUNTIME_DIR/withcache/breaker-<euid>` (else `$HOME/.cache/withcache/...`, each
//! base only when it is the user's own); a
//! directory or file that is not ours and private, or a line that does not parse, means "no
//! breaker" (probe as before). Writes go to `<file>.<pid>.tmp`, renamed over the file.
const std = @import("std");
const linux = std.os.linux;
const mem = std.mem;
const T = @import("tables.zig");

const Str = []const u8;
const Alloc = mem.Allocator;

pub const State = struct { failures: u64, until_ms: u64 };

pub const Breaker = struct {
    directory: [:0]const u8,
    parent: [:0]const u8,
    path: [:0]const u8,
    key: Str,

    pub fn read(self: Breaker) ?State {
        if (!dirOk(self.directory)) return null;
        const rc = linux.open(self.path.ptr, .{ .ACCMODE = .RDONLY, .NOFOLLOW = true, .NONBLOCK = true, .CLOEXEC = true }, 0);
        if (linux.errno(rc) != .SUCCESS) return null;
        const fd: i32 = @intCast(rc);
        defer _ = linux.close(fd);
        var st: linux.Statx = undefined;
        const s = linux.statx(fd, "", linux.AT.EMPTY_PATH, .{ .TYPE = true, .MODE = true, .UID = true, .SIZE = true }, &st);
        if (linux.errno(s) != .SUCCESS) return null;
        if (st.mode & linux.S.IFMT != linux.S.IFREG or !oursAndPrivate(st) or st.size > T.breaker_max_file) return null;
        var buf: [T.breaker_max_file]u8 = undefined;
        var n: usize = 0;
        while (n < buf.len) {
            const r = linux.read(fd, buf[n..].ptr, buf.len - n);
            switch (linux.errno(r)) {
                .SUCCESS => {
                    if (r == 0) break;
                    n += r;
                },
                .INTR => {},
                else => return null,
            }
        }
        return parse(buf[0..n], self.key);
    }

    /// When the breaker closes (Unix ms) if it is open at `now`.
    pub fn openUntil(self: Breaker, now: u64) ?u64 {
        return openIn(self.read(), now);
    }

    /// breaker.Breaker.before_probe: true when open (pass through); when the back-off of a
    /// failed host is over, claim the next probe for this shim (tables.breaker_claim_ms).
    pub fn beforeProbe(self: Breaker, gpa: Alloc, now: u64) bool {
        const state = self.read();
        if (openIn(state, now) != null) return true;
        if (state) |s| if (s.failures > 0) {
            const line = std.fmt.allocPrint(gpa, "{s} {d} {d} {s}\n", .{ T.breaker_magic, s.failures, now + T.breaker_claim_ms, self.key }) catch return false;
            self.write(gpa, line);
        };
        return false;
    }

    pub fn failed(self: Breaker, gpa: Alloc, now: u64) void {
        const failures = (if (self.read()) |s| s.failures else 0) + 1;
        const line = std.fmt.allocPrint(gpa, "{s} {d} {d} {s}\n", .{ T.breaker_magic, failures, now + backoffMs(failures), self.key }) catch return;
        self.write(gpa, line);
    }

    pub fn succeeded(self: Breaker) void {
        if (self.read() != null) _ = linux.unlink(self.path.ptr);
    }

    fn write(self: Breaker, gpa: Alloc, line: Str) void {
        _ = linux.mkdir(self.parent.ptr, 0o700);
        _ = linux.mkdir(self.directory.ptr, 0o700);
        if (!dirOk(self.directory)) return;
        const tmp = std.fmt.allocPrintSentinel(gpa, "{s}.{d}.tmp", .{ self.path, linux.getpid() }, 0) catch return;
        const rc = linux.open(tmp.ptr, .{ .ACCMODE = .WRONLY, .CREAT = true, .EXCL = true, .NOFOLLOW = true, .CLOEXEC = true }, 0o600);
        if (linux.errno(rc) != .SUCCESS) return;
        const fd: i32 = @intCast(rc);
        var rest = line;
        var ok = true;
        while (rest.len > 0) {
            const w = linux.write(fd, rest.ptr, rest.len);
            switch (linux.errno(w)) {
                .SUCCESS => rest = rest[w..],
                .INTR => {},
                else => {
                    ok = false;
                    break;
                },
            }
        }
        _ = linux.close(fd);
        if (!ok or linux.errno(linux.rename(tmp.ptr, self.path.ptr)) != .SUCCESS) _ = linux.unlink(tmp.ptr);
    }
};

fn openIn(state_in: ?State, now: u64) ?u64 {
    const state = state_in orelse return null;
    if (state.failures < 1 or state.until_ms <= now) return null;
    if (state.until_ms - now > T.breaker_max_s * 1000) return null;
    return state.until_ms;
}

pub fn backoffMs(failures: u64) u64 {
    const doublings: u6 = @intCast(@min(@max(failures, 1) - 1, 16));
    const seconds: u64 = @min(T.breaker_base_s * (@as(u64, 1) << doublings), T.breaker_max_s);
    return seconds * 1000;
}

pub fn nowMs() u64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.REALTIME, &ts);
    return @as(u64, @intCast(ts.sec)) * 1000 + @as(u64, @intCast(ts.nsec)) / 1_000_000;
}

/// breaker.Breaker.for_env: null when it is off or has no safe place.
pub fn forEnv(gpa: Alloc, getenv: *const fn (Str) ?Str, strip: *const fn (Str) Str, key: Str) ?Breaker {
    const setting = strip(getenv("WITHCACHE_BREAKER") orelse "");
    for (T.breaker_off_values) |off| if (std.ascii.eqlIgnoreCase(setting, off)) return null;
    if (mem.indexOfAny(u8, key, "\r\n") != null) return null;
    // breaker.state_dir: each base only when it is the running user's own.
    const runtime = gpa.dupeSentinel(u8, getenv("XDG_RUNTIME_DIR") orelse "", 0) catch return null;
    const home = gpa.dupeSentinel(u8, getenv("HOME") orelse "", 0) catch return null;
    var parent: [:0]const u8 = undefined;
    if (runtime.len > 0 and runtime[0] == '/' and owned(runtime)) {
        parent = runtime;
    } else if (home.len > 0 and home[0] == '/' and owned(home)) {
        parent = join(gpa, home, ".cache") catch return null;
    } else return null;
    const directory = join(gpa, parent, "withcache") catch return null;
    const name = std.fmt.allocPrint(gpa, "breaker-{d}", .{linux.geteuid()}) catch return null;
    const path = join(gpa, directory, name) catch return null;
    return .{ .directory = directory, .parent = parent, .path = path, .key = key };
}

/// os.path.join for a name without a slash.
fn join(gpa: Alloc, dir: Str, name: Str) ![:0]const u8 {
    const sep: Str = if (dir.len > 0 and dir[dir.len - 1] == '/') "" else "/";
    return mem.concatWithSentinel(gpa, u8, &.{ dir, sep, name }, 0);
}

fn owned(path: [:0]const u8) bool {
    var st: linux.Statx = undefined;
    const rc = linux.statx(linux.AT.FDCWD, path.ptr, 0, .{ .UID = true }, &st);
    return linux.errno(rc) == .SUCCESS and st.uid == linux.geteuid();
}

fn oursAndPrivate(st: linux.Statx) bool {
    return st.uid == linux.geteuid() and st.mode & 0o022 == 0;
}

fn dirOk(directory: [:0]const u8) bool {
    var st: linux.Statx = undefined;
    const rc = linux.statx(linux.AT.FDCWD, directory.ptr, linux.AT.SYMLINK_NOFOLLOW, .{ .TYPE = true, .MODE = true, .UID = true }, &st);
    if (linux.errno(rc) != .SUCCESS) return false;
    return st.mode & linux.S.IFMT == linux.S.IFDIR and oursAndPrivate(st);
}

fn digits(text: Str) bool {
    if (text.len == 0) return false;
    for (text) |c| if (!std.ascii.isDigit(c)) return false;
    return true;
}

/// breaker.parse: the state for `key`, or null for a malformed line or another key.
pub fn parse(data: Str, key: Str) ?State {
    if (data.len == 0 or data[data.len - 1] != '\n' or mem.count(u8, data, "\n") != 1) return null;
    const line = data[0 .. data.len - 1];
    // line.split(" ", 4): four fields, then the rest (the key may hold spaces).
    var fields: [4]Str = undefined;
    var rest = line;
    for (&fields) |*f| {
        const sp = mem.indexOfScalar(u8, rest, ' ') orelse return null;
        f.* = rest[0..sp];
        rest = rest[sp + 1 ..];
    }
    const magic_sp = mem.indexOfScalar(u8, T.breaker_magic, ' ').?;
    if (!mem.eql(u8, fields[0], T.breaker_magic[0..magic_sp]) or !mem.eql(u8, fields[1], T.breaker_magic[magic_sp + 1 ..]))
        return null;
    if (!mem.eql(u8, rest, key)) return null;
    if (!digits(fields[2]) or !digits(fields[3]) or fields[2].len > 6 or fields[3].len > 15) return null;
    return .{
        .failures = std.fmt.parseInt(u64, fields[2], 10) catch return null,
        .until_ms = std.fmt.parseInt(u64, fields[3], 10) catch return null,
    };
}
