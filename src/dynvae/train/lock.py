"""An exclusive lock on a directory, so that two processes never write one run at once.

The lock is ``fcntl.flock`` on ``DIR/.dynvae.lock``: the operating system releases it
when its process ends, however it ends (also on ``kill -9``), so a crashed run never
leaves a stale lock. On systems without ``fcntl`` (Windows) directories are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from dynvae.errors import ConfigError

try:
    import fcntl
except ImportError:         # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".dynvae.lock"


class DirectoryLock:
    """``with DirectoryLock(path):`` holds the lock of the existing directory ``path``;
    raises FileExistsError naming the holder's process id when another process has it,
    ConfigError when the lock file cannot be created."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        if fcntl is None:       # pragma: no cover - Windows
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ConfigError(f"cannot write in {self.path.parent}: "
                                  f"{err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FileExistsError(f"{self.path.parent} is being written by another "
                                      f"dynvae process (pid {holder}); wait for it to "
                                      "finish or choose another directory") from None
            # the previous holder may have removed the file between our open and flock:
            # then we hold a lock on a file nobody else can see, so take the new one
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)       # removed while held: no one can race it
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
