"""Measure the report parser's throughput and peak memory on large reports.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_report_parser

For each output size and kind, the script writes a report log to a
temporary file with the runner's own encoder (runner.execution_runner
.encode_report), then parses the file in 64 KiB pieces, once per keep-cap.
Each parse runs in a fresh child process, so that memory figures do not mix.
The child times three parses without tracemalloc and records the growth of
its peak resident set size (VmHWM). Then it parses once more under
tracemalloc for the traced peak.

Sizes are in MB of 10**6 bytes of stdout; stderr is 1 KB in every case.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.execution_runner import encode_report
from tasks.report import parse_report

MB = 10**6
MIB = 1024 * 1024
READ_BYTES = 64 * 1024
TIMED_RUNS = 3
STDERR = b"warning: \xff not UTF-8\n" * 45
TEXT_LINE = "{:09d} INFO processed item, ünïcode ✓, 50% done\tok\n"


def build_stdout(size: int, kind: str) -> bytes:
    """Return size bytes of stdout: log-like UTF-8 text, or random bytes."""
    if kind == "binary":
        # randbytes fails on 500 MB (getrandbits takes a C int of bits in
        # Python 3.11), so the output is built from 1 MiB pieces.
        rng = random.Random(size)
        return b"".join(
            rng.randbytes(min(MIB, size - start)) for start in range(0, size, MIB)
        )
    parts: list[bytes] = []
    total = 0
    number = 0
    while total < size:
        line = TEXT_LINE.format(number).encode()
        parts.append(line)
        total += len(line)
        number += 1
    return b"".join(parts)[:size]


def write_log(path: Path, stdout: bytes) -> int:
    """Write a report with stdout and STDERR to path; return its length."""
    header: dict[str, Any] = {
        "runner": "benchmark",
        "outcome": "exited",
        "exit_code": 0,
        "process_exit_code": 0,
        "signal": None,
        "signal_name": None,
        "timed_out": False,
        "oom_killed": None,
        "forwarded_signals": [],
        "usage": {
            "wall_seconds": 1.0,
            "user_cpu_seconds": 1.0,
            "system_cpu_seconds": 0.0,
            "max_rss_bytes": None,
            "cgroup_memory_peak_bytes": None,
            "cgroup_memory_limit_bytes": None,
        },
        "stdout": {"original_bytes": len(stdout), "truncated": False},
        "stderr": {"original_bytes": len(STDERR), "truncated": False},
        "notes": [],
        "runner_error": None,
    }
    with path.open("wb") as handle:
        for line in encode_report(header, stdout, STDERR):
            handle.write(line)
    return path.stat().st_size


def read_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as handle:
        while piece := handle.read(READ_BYTES):
            yield piece


def high_water_rss() -> int:
    """Return this process's peak resident set size in bytes (Linux VmHWM).

    VmHWM belongs to the process's own address space, unlike ru_maxrss,
    which a child also inherits from the parent that forked it.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status; this benchmark needs Linux")


def measure(path: Path, keep: int | None) -> dict[str, Any]:
    """Parse path in this process and return the figures.

    The timed parses run without tracemalloc, and the median of TIMED_RUNS
    is reported, because other load on the machine makes single runs vary.
    """
    baseline_rss = high_water_rss()
    timings = []
    kept_stdout_bytes = 0
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        result = parse_report(
            read_pieces(path), max_raw_bytes=MIB, max_output_bytes=keep
        )
        timings.append(time.perf_counter() - started)
        if not result.ok or result.report is None:
            raise SystemExit(f"benchmark log did not parse: {result.failure}")
        kept_stdout_bytes = len(result.report.stdout)
        del result
    peak_rss = high_water_rss()

    tracemalloc.start()
    parse_report(read_pieces(path), max_raw_bytes=MIB, max_output_bytes=keep)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": statistics.median(timings),
        "log_bytes": path.stat().st_size,
        "kept_bytes": kept_stdout_bytes,
        "rss_growth_bytes": peak_rss - baseline_rss,
        "traced_peak_bytes": traced_peak,
    }


def run_child(path: Path, keep: int | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_report_parser", "--child"]
    command += [str(path), "all" if keep is None else str(keep)]
    completed = subprocess.run(command, capture_output=True, check=True, text=True)
    figures: dict[str, Any] = json.loads(completed.stdout)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="1,100,500", help="stdout sizes in MB (default 1,100,500)"
    )
    parser.add_argument(
        "--kinds", default="text,binary", help="output kinds (default text,binary)"
    )
    parser.add_argument(
        "--child", nargs=2, metavar=("LOG", "KEEP"), help=argparse.SUPPRESS
    )
    arguments = parser.parse_args()

    if arguments.child:
        log, keep = arguments.child
        figures = measure(Path(log), None if keep == "all" else int(keep))
        print(json.dumps(figures))
        return 0

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {sys.platform}")
    print(
        f"{'stdout':>8} {'kind':>6} {'log MB':>8} {'keep':>8} {'MB/s':>7} "
        f"{'seconds':>8} {'kept MB':>8} {'rss +MB':>8} {'traced MB':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-report-") as directory:
        for kind in arguments.kinds.split(","):
            for size_mb in (int(s) for s in arguments.sizes.split(",")):
                path = Path(directory) / f"{kind}-{size_mb}.log"
                stdout = build_stdout(size_mb * MB, kind)
                write_log(path, stdout)
                del stdout
                for keep in (MIB, None):
                    figures = run_child(path, keep)
                    log_mb = figures["log_bytes"] / MB
                    print(
                        f"{size_mb:>6}MB {kind:>6} {log_mb:>8.1f} "
                        f"{'1MiB' if keep else 'all':>8} "
                        f"{log_mb / figures['seconds']:>7.1f} "
                        f"{figures['seconds']:>8.2f} "
                        f"{figures['kept_bytes'] / MB:>8.1f} "
                        f"{figures['rss_growth_bytes'] / MB:>8.1f} "
                        f"{figures['traced_peak_bytes'] / MB:>9.1f}",
                        flush=True,
                    )
                path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
