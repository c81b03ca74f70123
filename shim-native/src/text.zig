//! The few Python str methods plan() uses, on UTF-8 bytes, with Python's own Unicode data
//! (from tables.zig): isalnum, strip, splitlines, lower. Bytes that are not valid UTF-8 stand
//! for themselves, as surrogateescape makes them in Python: not alnum, not space.
const std = @import("std");
const T = @import("tables.zig");

const Str = []const u8;
const invalid: u21 = 0xdc80; // a lone surrogate: what surrogateescape decodes a bad byte to

pub const Char = struct { cp: u21, len: usize };

/// The code point at the start of `s` (non-empty).
pub fn firstChar(s: Str) Char {
    const n = std.unicode.utf8ByteSequenceLength(s[0]) catch return .{ .cp = invalid, .len = 1 };
    if (n > s.len) return .{ .cp = invalid, .len = 1 };
    const cp = std.unicode.utf8Decode(s[0..n]) catch return .{ .cp = invalid, .len = 1 };
    return .{ .cp = cp, .len = n };
}

pub fn isAlnum(cp: u21) bool {
    if (cp < 0x80) return std.ascii.isAlphanumeric(@intCast(cp));
    var lo: usize = 0;
    var hi: usize = T.unicode_alnum.len;
    while (lo < hi) {
        const mid = (lo + hi) / 2;
        const r = T.unicode_alnum[mid];
        if (cp < r[0]) {
            hi = mid;
        } else if (cp > r[1]) {
            lo = mid + 1;
        } else return true;
    }
    return false;
}

/// str.isalnum(): non-empty and every character alnum.
pub fn allAlnum(s: Str) bool {
    if (s.len == 0) return false;
    var i: usize = 0;
    while (i < s.len) {
        const c = firstChar(s[i..]);
        if (!isAlnum(c.cp)) return false;
        i += c.len;
    }
    return true;
}

fn isSpace(cp: u21) bool {
    for (T.unicode_space) |sp| if (sp == cp) return true;
    return false;
}

fn isLineBreak(cp: u21) bool {
    for (T.unicode_line_breaks) |b| if (b == cp) return true;
    return false;
}

/// str.strip() with no argument.
pub fn strip(s: Str) Str {
    var start: usize = 0;
    var end: usize = 0; // end of the last non-space character
    var seen = false;
    var i: usize = 0;
    while (i < s.len) {
        const c = firstChar(s[i..]);
        if (!isSpace(c.cp)) {
            if (!seen) start = i;
            seen = true;
            end = i + c.len;
        }
        i += c.len;
    }
    return if (seen) s[start..end] else s[0..0];
}

/// str.splitlines() (without the line ends).
pub const Lines = struct {
    rest: ?Str,

    pub fn next(self: *Lines) ?Str {
        const s = self.rest orelse return null;
        if (s.len == 0) {
            self.rest = null;
            return null;
        }
        var i: usize = 0;
        while (i < s.len) {
            const c = firstChar(s[i..]);
            if (isLineBreak(c.cp)) {
                var after = i + c.len;
                if (c.cp == '\r' and after < s.len and s[after] == '\n') after += 1;
                self.rest = s[after..];
                return s[0..i];
            }
            i += c.len;
        }
        self.rest = null;
        return s;
    }
};

/// ASCII-case-insensitive equality. Exact for Python's lower()/upper() whenever the other side
/// is a word with no 'k' (tables.unicode_lower_ascii lists the only exception, KELVIN SIGN).
pub fn eqlLower(a: Str, b: Str) bool {
    return std.ascii.eqlIgnoreCase(a, b);
}

pub fn eqlUpper(a: Str, b: Str) bool {
    return std.ascii.eqlIgnoreCase(a, b);
}

/// `a.lower() == b.lower()` for URL authorities and schemes (ASCII case folding only).
pub fn eqlLowerBoth(a: Str, b: Str) bool {
    return std.ascii.eqlIgnoreCase(a, b);
}

/// `a.lower() == word` for an ASCII lower-case `word`, with Python's Unicode lower().
pub fn eqlLowerUnicode(a: Str, word: Str) bool {
    var i: usize = 0;
    var j: usize = 0;
    while (i < a.len) {
        const c = firstChar(a[i..]);
        i += c.len;
        var low: ?u8 = null;
        if (c.cp < 0x80) {
            low = std.ascii.toLower(@intCast(c.cp));
        } else for (T.unicode_lower_ascii) |e| {
            if (e[0] == c.cp) low = e[1];
        }
        const l = low orelse return false;
        if (j >= word.len or word[j] != l) return false;
        j += 1;
    }
    return j == word.len;
}
