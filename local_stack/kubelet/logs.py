"""Container log files: what a container wrote, and when, for the log endpoint.

Each container log is two files in its folder. ``<restart>.log`` contains the
bytes of stdout and stderr exactly as the container wrote them, whole lines
interleaved in arrival order, so it can be sent as it is. ``<restart>.index``
has one fixed-size record per line: offset and length in the log file, arrival
time in nanoseconds since the epoch, and the stream. The index lets a reader
find the last N lines, the first line after a time, or prefix each line with
its time, without parsing the log file.

A line ends at a newline. A line longer than :data:`MAX_LINE_BYTES` is split
into several records, as a CRI runtime splits long lines, and each part counts
as a line for ``tailLines``. A last line without newline is written when the
stream closes.

Only one :class:`LogWriter` writes a container log, and it writes the log file
before the index, so a reader that sees an index record can read its bytes.
"""

from __future__ import annotations

import functools
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

Stream = Literal["stdout", "stderr"]

#: Maximum length of a line stored as one record, in bytes. containerd and CRI-O split
#: lines at 16 KiB too.
MAX_LINE_BYTES = 16 * 1024

#: Bytes read from the log file at a time when serving it.
READ_CHUNK_BYTES = 256 * 1024

#: Index records read at a time when serving a log with timestamps.
INDEX_BATCH = 4096

#: Seconds between checks for new lines while following a log.
FOLLOW_POLL_SECONDS = 0.1

#: Polls between checks whether a follower is still wanted (its client still
#: connected), about once a second.
WANTED_CHECK_POLLS = 10

_RECORD = struct.Struct("<QIqB")
_STREAM_CODES: dict[Stream, int] = {"stdout": 1, "stderr": 2}


@dataclass(frozen=True)
class LogRecord:
    """One line of a container log, as the index stores it."""

    offset: int
    length: int
    time_ns: int
    stream: int


@dataclass(frozen=True)
class LogPaths:
    """Log file and index file of one run of one container."""

    log: Path
    index: Path

    @classmethod
    def in_folder(cls, folder: Path, restart_count: int = 0) -> LogPaths:
        return cls(folder / f"{restart_count}.log", folder / f"{restart_count}.index")

    def exists(self) -> bool:
        return self.log.exists() and self.index.exists()


class LogWriter:
    """Appends one container's stdout and stderr to its log, line by line.

    Thread-safe. Bytes of a stream are buffered until a newline, so lines of
    stdout and stderr never mix inside one line.
    """

    def __init__(self, paths: LogPaths) -> None:
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        self.paths = paths
        self._lock = threading.Lock()
        self._log: BinaryIO = paths.log.open("ab")
        self._index: BinaryIO = paths.index.open("ab")
        self._offset = self._log.tell()
        self._partial: dict[Stream, bytearray] = {
            "stdout": bytearray(),
            "stderr": bytearray(),
        }
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, stream: Stream, data: bytes) -> None:
        """Buffer ``data`` and store the complete lines it ends."""
        with self._lock:
            if self._closed:
                return
            buffer = self._partial[stream]
            buffer += data
            start = 0
            now = time.time_ns()
            while True:
                newline = buffer.find(b"\n", start, start + MAX_LINE_BYTES)
                if newline >= 0:
                    self._append(stream, buffer[start : newline + 1], now)
                    start = newline + 1
                elif len(buffer) - start >= MAX_LINE_BYTES:
                    self._append(stream, buffer[start : start + MAX_LINE_BYTES], now)
                    start += MAX_LINE_BYTES
                else:
                    break
            del buffer[:start]
            self._flush()

    def close(self) -> None:
        """Store the unfinished last line of each stream and close the files."""
        with self._lock:
            if self._closed:
                return
            now = time.time_ns()
            for stream, buffer in self._partial.items():
                if buffer:
                    self._append(stream, bytes(buffer), now)
                    buffer.clear()
            self._flush()
            self._log.close()
            self._index.close()
            self._closed = True

    def _append(self, stream: Stream, line: bytes | bytearray, time_ns: int) -> None:
        self._log.write(line)
        self._index.write(
            _RECORD.pack(self._offset, len(line), time_ns, _STREAM_CODES[stream])
        )
        self._offset += len(line)

    def _flush(self) -> None:
        # The log file goes first: readers trust every index record they see.
        self._log.flush()
        self._index.flush()


@dataclass(frozen=True)
class LogOptions:
    """Query parameters of the kubelet's containerLogs endpoint."""

    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    since_ns: int | None = None
    follow: bool = False


def format_timestamp(time_ns: int) -> str:
    """Format a time as Go's RFC3339Nano in UTC: trailing zeros of the
    fraction are dropped, and the fraction is left out when it is zero."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    text = _format_seconds(seconds)
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


@functools.lru_cache(maxsize=64)
def _format_seconds(seconds: int) -> str:
    # Cached because consecutive log lines mostly share their second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class LogReader:
    """Reads a container log as the kubelet's log endpoint returns it."""

    def __init__(self, paths: LogPaths) -> None:
        self.paths = paths

    def record_count(self) -> int:
        try:
            return self.paths.index.stat().st_size // _RECORD.size
        except FileNotFoundError:
            return 0

    def records(self, start: int, stop: int) -> list[LogRecord]:
        """Return index records ``start`` to ``stop - 1``."""
        if stop <= start:
            return []
        with self.paths.index.open("rb") as index:
            index.seek(start * _RECORD.size)
            data = index.read((stop - start) * _RECORD.size)
        return [
            LogRecord(*_RECORD.unpack_from(data, position))
            for position in range(0, len(data) - _RECORD.size + 1, _RECORD.size)
        ]

    def first_record_since(self, since_ns: int, count: int) -> int:
        """Return the number of the first record at or after ``since_ns``.

        Binary search over the index, which is in arrival order.
        """
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            if self.records(middle, middle + 1)[0].time_ns < since_ns:
                low = middle + 1
            else:
                high = middle
        return low

    def stream(
        self,
        options: LogOptions,
        is_active: Callable[[], bool],
        is_wanted: Callable[[], bool] = lambda: True,
    ) -> Iterator[bytes]:
        """Yield the log in chunks as the endpoint sends it.

        ``tailLines`` and ``sinceSeconds`` pick the first line, ``timestamps``
        prefixes each line with its arrival time and a space, and
        ``limitBytes`` cuts the output, prefixes included, after that many
        bytes. With ``follow`` the iterator waits for new lines until
        ``is_active`` returns false and no line is left, or until
        ``is_wanted``, checked about once a second, returns false. Memory use stays
        within a few chunks, whatever the size of the log.
        """
        count = self.record_count()
        start = 0
        if options.tail_lines is not None:
            start = max(0, count - options.tail_lines)
        if options.since_ns is not None:
            start = max(start, self.first_record_since(options.since_ns, count))
        remaining = options.limit_bytes

        with self.paths.log.open("rb") as log_file:
            while True:
                for chunk in self._chunks(log_file, start, count, options.timestamps):
                    if remaining is not None:
                        if len(chunk) >= remaining:
                            yield chunk[:remaining]
                            return
                        remaining -= len(chunk)
                    yield chunk
                start = count
                if not options.follow:
                    return
                count = self._wait_for_records(start, is_active, is_wanted)
                if count <= start:
                    return

    def _wait_for_records(
        self,
        start: int,
        is_active: Callable[[], bool],
        is_wanted: Callable[[], bool],
    ) -> int:
        """Wait until the index has more than ``start`` records, or the writer
        stopped, or the reader is no longer wanted. Return the record count."""
        polls = 0
        while True:
            # Reading the activity before the count means that lines written
            # just before the writer stopped are still seen.
            active = is_active()
            count = self.record_count()
            if count > start or not active:
                return count
            polls += 1
            if polls % WANTED_CHECK_POLLS == 0 and not is_wanted():
                return start
            time.sleep(FOLLOW_POLL_SECONDS)

    def _chunks(
        self, log_file: BinaryIO, start: int, stop: int, timestamps: bool
    ) -> Iterator[bytes]:
        if start >= stop:
            return
        if not timestamps:
            first = self.records(start, start + 1)[0]
            last = self.records(stop - 1, stop)[0]
            yield from _read_range(log_file, first.offset, last.offset + last.length)
            return
        for batch_start in range(start, stop, INDEX_BATCH):
            batch = self.records(batch_start, min(stop, batch_start + INDEX_BATCH))
            pieces: list[bytes] = []
            size = 0
            log_file.seek(batch[0].offset)
            for record in batch:
                prefix = format_timestamp(record.time_ns).encode() + b" "
                pieces.append(prefix + log_file.read(record.length))
                size += len(pieces[-1])
                if size >= READ_CHUNK_BYTES:
                    yield b"".join(pieces)
                    pieces, size = [], 0
            if pieces:
                yield b"".join(pieces)


def _read_range(log_file: BinaryIO, begin: int, end: int) -> Iterator[bytes]:
    log_file.seek(begin)
    position = begin
    while position < end:
        data = log_file.read(min(READ_CHUNK_BYTES, end - position))
        if not data:
            return
        position += len(data)
        yield data


def tail_text(paths: LogPaths, max_lines: int, max_bytes: int) -> str:
    """Return the end of a log: at most ``max_lines`` lines and ``max_bytes``
    bytes, decoded leniently. Used for FallbackToLogsOnError messages."""
    if not paths.exists():
        return ""
    reader = LogReader(paths)
    options = LogOptions(tail_lines=max_lines)
    data = b"".join(reader.stream(options, lambda: False))
    return data[-max_bytes:].decode(errors="replace")


def remove_folder(folder: Path) -> None:
    """Delete a pod's log folder and everything in it, if it still exists."""
    shutil.rmtree(folder, ignore_errors=True)
