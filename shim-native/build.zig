//! Builds the native withcache shim: one static binary, `zig-out/bin/withcache-shim`.
//!
//!     python -m ziglang build -Doptimize=ReleaseSmall -Dtarget=x86_64-linux-musl
//!
//! The option tables in src/tables.zig are generated from the Python shim's data by
//! gen_tables.py (committed; a test checks that regenerating changes nothing), so the build
//! needs no Python.
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});
    const exe = b.addExecutable(.{
        .name = "withcache-shim",
        .root_module = b.createModule(.{
            .root_source_file = b.path("src/main.zig"),
            .target = target,
            .optimize = optimize,
            .strip = optimize != .debug,
            .single_threaded = true,
            .link_libc = false,
        }),
    });
    exe.linkage = .static;
    b.installArtifact(exe);
}
