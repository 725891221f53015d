#!/usr/bin/env python3
"""What the backing filesystem does under four ways of laying out a new 16 MiB WAL segment
in cryptfs's two-slot format (docs/format.md 3), with the WAL flushes that follow it: the
same pwrite/fdatasync pattern cryptfs issues on its backing file, replayed on a plain
directory, without FUSE or cipher, so only the disk and the filesystem are measured.

  reserved      encrypted zeros in slot A + zeros in slot B pages (what cryptfs does for pg_wal)
  zeros-only    encrypted zeros in slot A only (slot B pages left as holes)
  holes+B       hole entries (no slot-A page) + zeros in slot B pages
  holes         hole entries only (no data page at all)

Segment: per group of 32 blocks, the data pages written (128 KiB per slot written) and the
32 entries (2 KiB), then fsync. Flushes: every 8 KiB page (2 blocks) written 3 times
(generations 2, 3, 4: slots B, A, B), each write = one pwrite of the 2 data pages, one of
the 2 entries (128 B), then fdatasync (iobench wal-flush's pattern). Each layout in turn
per round, rotating the order; median of ROUNDS.

    python3 bench/cryptfs/segment_layouts.py DIR [ROUNDS]
"""
import os
import statistics
import sys
import time

BLOCK = 4096
GROUP_BLOCKS = 32
GROUP_BYTES = 65 * BLOCK
SEGMENT_BLOCKS = 16 << 20 >> 12
HEADER = BLOCK


def group_at(g):
    return HEADER + g * GROUP_BYTES


def data_at(block, slot):
    g, i = divmod(block, GROUP_BLOCKS)
    return group_at(g) + BLOCK * (1 + i + 32 * slot)


def entry_at(block, slot):
    g, i = divmod(block, GROUP_BLOCKS)
    return group_at(g) + 64 * (32 * slot + i)


LAYOUTS = {
    "reserved": (True, True),
    "zeros-only": (True, False),
    "holes+B": (False, True),
    "holes": (False, False),
}


def run(path, layout):
    write_a, write_b = LAYOUTS[layout]
    noise = os.urandom(32 * BLOCK)  # stands for ciphertext
    zeros = bytes(32 * BLOCK)
    entries = os.urandom(32 * 64)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        os.pwrite(fd, bytes(BLOCK), 0)
        for g in range(SEGMENT_BLOCKS // GROUP_BLOCKS):
            first = g * GROUP_BLOCKS
            if write_a:
                os.pwrite(fd, noise, data_at(first, 0))
            if write_b:
                os.pwrite(fd, zeros, data_at(first, 1))
            os.pwrite(fd, entries, entry_at(first, 0))
        os.fsync(fd)
        segment_ms = (time.perf_counter() - start) * 1e3
        page = noise[: 2 * BLOCK]
        entry_pair = entries[:128]
        flushes = 0
        start = time.perf_counter()
        for p in range(SEGMENT_BLOCKS // 2):
            block = 2 * p
            for slot in (1, 0, 1):
                os.pwrite(fd, page, data_at(block, slot))
                os.pwrite(fd, entry_pair, entry_at(block, slot))
                os.fdatasync(fd)
                flushes += 1
        flush_us = (time.perf_counter() - start) * 1e6 / flushes
        allocated_mib = os.fstat(fd).st_blocks * 512 / (1 << 20)
    finally:
        os.close(fd)
        os.unlink(path)
    return segment_ms, flush_us, allocated_mib


def main():
    directory = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    names = list(LAYOUTS)
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            samples[name].append(run(os.path.join(directory, "segment-layout"), name))
    print(f"{'layout':<12} {'segment ms':>11} {'flush us':>9} {'allocated MiB':>14}   samples (segment ms / flush us)")
    for name in names:
        seg = statistics.median(s[0] for s in samples[name])
        flush = statistics.median(s[1] for s in samples[name])
        alloc = statistics.median(s[2] for s in samples[name])
        detail = " ".join(f"{s[0]:.1f}/{s[1]:.0f}" for s in samples[name])
        print(f"{name:<12} {seg:>11.1f} {flush:>9.0f} {alloc:>14.1f}   {detail}")


if __name__ == "__main__":
    main()
