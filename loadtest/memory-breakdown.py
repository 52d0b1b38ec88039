#!/usr/bin/env python3
"""Where a running process's resident memory lies, from /proc/<pid>/smaps.

    loadtest/memory-breakdown.py PID [PID ...]

For pgward (mimalloc for Rust allocations, glibc malloc for libpg_query's C
code) it sorts resident memory into:

- mimalloc arenas: anonymous mappings of 256 MiB or more (mimalloc v3
  reserves its arenas 1 GiB at a time);
- glibc arenas: the brk heap (`[heap]`, the main arena) and the per-thread
  arenas: a 64 MiB-aligned anonymous mapping whose PROT_NONE remainder
  brings it to 64 MiB (HEAP_MAX_SIZE);
- other anonymous: thread stacks, glibc's direct mmaps for large blocks;
- files: the binary and shared libraries.

The split is by size and alignment, so it is a heuristic; the total is
exact. Use it with `pgward-loadtest --hold S`, which
keeps the proxies running after the report and prints their pids.
"""

import sys

MIB = 1024 * 1024


def mappings(pid):
    """(start, end, perms, path, rss_bytes) for every mapping of pid."""
    out = []
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                path = head[5] if len(head) > 5 else ""
                current = [start, end, head[1], path, 0]
                out.append(current)
            elif head[0] == "Rss:" and current is not None:
                current[4] = int(head[1]) * 1024
    return out


def breakdown(pid):
    totals = {"mimalloc arenas": 0, "glibc arenas": 0, "other anonymous": 0, "files": 0}
    maps = mappings(pid)
    for i, (start, end, _perms, path, rss) in enumerate(maps):
        if path == "":
            following = maps[i + 1] if i + 1 < len(maps) else None
            arena_end = following[1] if following and following[0] == end and following[2] == "---p" else end
            if end - start >= 256 * MIB:
                totals["mimalloc arenas"] += rss
            elif start % (64 * MIB) == 0 and arena_end - start == 64 * MIB:
                totals["glibc arenas"] += rss
            else:
                totals["other anonymous"] += rss
        elif path == "[heap]":
            totals["glibc arenas"] += rss
        elif path.startswith("["):
            totals["other anonymous"] += rss
        else:
            totals["files"] += rss
    return totals


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for pid in sys.argv[1:]:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        t = breakdown(pid)
        total = sum(t.values())
        parts = ", ".join(f"{k} {v / MIB:.1f}" for k, v in t.items())
        print(f"{comm} {pid}: RSS {total / MIB:.1f} MiB = {parts}")


if __name__ == "__main__":
    main()
