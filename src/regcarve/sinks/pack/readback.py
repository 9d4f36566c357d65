"""sha256 of a file as it is being written, read back behind the writer by a thread of its own.

The writer copies bytes in the kernel (sendfile) and says how far the file is written; the thread
reads that part back from the page cache and hashes it. Both release the GIL, so the copy and the
hash run on two cores, and the hash of one volume can still run while the next is written. What is
hashed is what the file holds, byte for byte, which is what `sha256sum -c` will read.
"""

from __future__ import annotations

import hashlib
import os
import threading

CHUNK = 4 << 20  # bytes read back at once
_NOTIFY_EVERY = 1 << 20  # the writer wakes the thread once this much more is written (and at the end)


class ReadBackHash:
    """`advance(written)` as the file grows, `close()` when it is complete, then `hexdigest()`; `abandon()`
    when the file is thrown away. The descriptor must be open for reading and stay open until then."""

    def __init__(self, fd: int, name: str, part_size: int = 0):
        self._fd = fd
        self._sha256 = hashlib.sha256()
        self._part_size = part_size  # > 0: also the sha256 of each run of part_size bytes (the byte parts)
        self._parts: list = []
        self._changed = threading.Condition()
        self._written = self._announced = 0
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"regcarve-readback-{name}", daemon=True)
        self._thread.start()

    def advance(self, written: int) -> None:
        if written - self._announced >= _NOTIFY_EVERY:
            self._announce(written)

    def close(self, written: int) -> None:
        self._announce(written, closed=True)

    def hexdigest(self) -> str:
        """Waits for the thread; OSError when the file could not be read back whole."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sha256.hexdigest()

    def part_hexdigests(self) -> list[str]:
        """After hexdigest(): the sha256 of each part_size bytes of the file, in order."""
        return [h.hexdigest() for h in self._parts]

    def abandon(self) -> None:
        with self._changed:
            self._written = -1  # nothing more is hashed
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _announce(self, written: int, closed: bool = False) -> None:
        with self._changed:
            self._written = self._announced = written
            self._closed = closed
            self._changed.notify()

    def _run(self) -> None:
        buffer = memoryview(bytearray(CHUNK))
        done = 0
        try:
            while True:
                with self._changed:
                    while self._written == done and not self._closed:
                        self._changed.wait()
                    end, closed = self._written, self._closed
                if end < 0 or (closed and end == done):
                    return
                while done < end:
                    n = os.preadv(self._fd, [buffer[:min(CHUNK, end - done)]], done)
                    if n == 0:
                        raise OSError(f"read back {done:,} of {end:,} bytes written")
                    self._sha256.update(buffer[:n])
                    if self._part_size:
                        self._hash_parts(buffer[:n], done)
                    done += n
        except BaseException as e:  # handed to hexdigest()
            self._error = e

    def _hash_parts(self, data: memoryview, at: int) -> None:
        """`data`, which starts at byte `at` of the file, into the hashes of the parts it falls in."""
        while data:
            if at // self._part_size == len(self._parts):
                self._parts.append(hashlib.sha256())
            room = self._part_size - at % self._part_size
            self._parts[-1].update(data[:room])
            data, at = data[room:], at + min(room, len(data))
