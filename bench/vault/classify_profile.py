"""Shares of the vault's CPU by component, from `perf script -F comm,ip,sym` output.

A sample counts for the first unambiguous marker in its stack (aws-lc's RSA private
transform, fdatasync), else for the innermost frame that names a Rust crate of the
request path. Generic type names (a hyper frame over a TLS stream) do not count: only
the path a frame starts with.

Then the same samples by thread (crypto workers, tokio workers, audit writer, ...):
which thread the overhead runs on says which hand-off it belongs to.
"""

import collections
import re
import sys

MARKERS = [
    ("RSA private-key math (aws-lc)", ["RSA_decrypt", "rsa_default_private_transform", "RSA_sign"]),
    ("audit commit: fdatasync (kernel)", ["fdatasync"]),
]
CRATES = [
    ("RSA private-key math (aws-lc)", ["pgcmk_crypto::rsa"]),
    ("audit writer (chain mac, JSON, batching)", ["pgcmk_vault::audit"]),
    ("redb (store reads, audit commit)", ["redb", "pgcmk_vault::storage"]),
    ("TLS (rustls, tokio-rustls)", ["rustls", "tokio_rustls"]),
    ("token check", ["pgcmk_vault::token", "pgcmk_crypto::mac"]),
    ("JSON", ["serde_json", "serde"]),
    ("HTTP (hyper, axum, tower, http, listener)", ["hyper", "hyper_util", "axum", "axum_core", "tower", "http", "httparse", "pgcmk_hostkeys"]),
    ("tracing", ["tracing", "tracing_subscriber", "tracing_core", "sharded_slab"]),
    ("metrics", ["metrics", "metrics_util", "metrics_exporter_prometheus"]),
    ("crypto worker pool", ["pgcmk_vault::worker_pool"]),
    ("thread hand-offs (std channels, mutexes, park/unpark)", ["std::sync", "std::sys::sync", "std::thread", "std::sys::pal::unix::futex"]),
    ("tokio runtime (scheduling, I/O driver, wake-ups)", ["tokio"]),
    ("vault request logic (routing, policy, audit scope, ids)", ["pgcmk_vault", "pgcmk_akv_model", "base64", "hex"]),
]


def classify(stack):
    for name, marks in MARKERS:
        if any(m in frame for frame in stack for m in marks):
            return name
    for frame in stack:
        path = frame.lstrip("<&")
        for name, prefixes in CRATES:
            if any(path.startswith(p + "::") or path.startswith(p + "<") for p in prefixes):
                return name
    return "other (libc, kernel without a Rust caller)"


def samples(path):
    """(thread name, stack) of every sample."""
    stack, comm = [], None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            if not line.startswith("\t"):
                if comm is not None:
                    yield comm, stack
                comm, stack = line.split()[0], []
            else:
                parts = line.strip().split(None, 1)
                stack.append(parts[1] if len(parts) > 1 else "")
    if comm is not None:
        yield comm, stack


def thread_kind(comm):
    """crypto-0 and crypto-1 are one kind of thread."""
    return re.sub(r"-?\d+$", "", comm) or comm


def main():
    counts = collections.Counter()
    threads = collections.Counter()
    rsa_by_thread = collections.Counter()
    for comm, stack in samples(sys.argv[1]):
        component = classify(stack)
        counts[component] += 1
        threads[thread_kind(comm)] += 1
        if component == "RSA private-key math (aws-lc)":
            rsa_by_thread[thread_kind(comm)] += 1
    total = sum(counts.values())
    if not total:
        sys.exit("no samples")
    for name, n in counts.most_common():
        print(f"{100 * n / total:6.2f} %  {name}")
    rsa = counts["RSA private-key math (aws-lc)"]
    if rsa:
        print(f"vault CPU / RSA CPU = {total / rsa:.2f} ({total} samples)")
    print("by thread (share of the vault's CPU; of it, RSA):")
    for kind, n in threads.most_common():
        print(f"{100 * n / total:6.2f} %  {kind} (RSA {100 * rsa_by_thread[kind] / total:.2f} %)")


main()
