"""Small shared helpers: the actionkit home directory, atomic file writes, work-directory locks, stale temporary
files, distributed rank."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

_LOG = logging.getLogger("actionkit")

HOME_ENV = "ACTIONKIT_HOME"


def actionkit_home() -> Path:
    """``$ACTIONKIT_HOME`` (default ``~/.cache/actionkit``): checkpoints, inductor's caches, video indexes; not
    created here."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else Path.home() / ".cache" / "actionkit"


# ``atomic_write`` writes ``.{name}.tmp-{pid}`` next to the target
_TEMP_NAME_RE = re.compile(r"^\..+\.tmp-(\d+)$")


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` again (same type and errno) with ``path`` as its file name, so that the message names it."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def ensure_directory(path: str | os.PathLike, what: str = "directory") -> Path:
    """Create ``path`` (and its parents) unless it is already a directory.

    Raises ``NotADirectoryError`` naming ``path`` when a file stands in its place (or in a parent's place),
    and other ``OSError`` s (permissions, a full disk) naming the directory that could not be made.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"the {what} is a file, not a directory", str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create the {what} {path}: a file is in the way",
                                 str(blocker)) from None
    except NotADirectoryError:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create the {what} {path}: a file is in the way",
                                 str(blocker)) from None
    except OSError as exc:
        raise _naming(exc, path) from None
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``.

    A process killed mid-write leaves the previous ``path`` (or nothing) and never a truncated file; the
    temporary file it leaves (``.{name}.tmp-{pid}``) is removed by :func:`remove_stale_temp_files`.
    An ``OSError`` while writing (a full disk, no permission, a directory that is a file) is raised again
    with ``path`` as its file name, so the message says which file could not be written.
    """
    path = Path(path)
    ensure_directory(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        f = open(tmp, mode, encoding=encoding) if "b" not in mode else open(tmp, mode)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        # errors of the writes themselves carry no file name: name the target (others name their own file)
        if isinstance(exc, OSError) and (exc.filename is None or exc.filename == str(tmp)):
            raise _naming(exc, path) from None
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a directory (its entries) to disk; best effort (some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)



# ---- torch.distributed state, for the layers below the engine (torch is imported only when asked)
def get_dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing to do in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def atomic_save_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


# ----------------------------------------------------------------------------------------------- processes
def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), ``None`` elsewhere.

    Together with the pid it identifies a process: a recycled pid has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def remove_stale_temp_files(directory: str | os.PathLike, logger: logging.Logger | None = None) -> list[Path]:
    """Delete the ``.{name}.tmp-{pid}`` files that :func:`atomic_write` left in ``directory`` (not its
    sub-directories) when a process was killed mid-write; only those whose pid is no longer running
    on this host.  Returns the removed paths (each one is logged)."""
    logger = logger or _LOG
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_NAME_RE.match(p.name)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))) or not p.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
            logger.info("removed %s (left by process %s, killed while writing)", p, m.group(1))
    return removed


# ----------------------------------------------------------------------------------------------- work-dir lock
class WorkDirLockedError(RuntimeError):
    """Another live process holds the work directory's lock; the message names the directory and holder."""

    def __init__(self, lock_path: Path, message: str):
        self.lock_path = lock_path
        super().__init__(message)


class WorkDirLock:
    """An exclusive lock on a work directory: the file ``{directory}/actionkit.lock`` holding the holder's
    pid, host, process start time, start date and command line (JSON).

    :meth:`acquire` creates the file exclusively.  A lock left by a process that is no longer running on
    this host (or whose pid now belongs to another process) is stale and is taken over, with a log line;
    a lock held by a live process, or by any process on another host (its liveness cannot be checked),
    raises :class:`WorkDirLockedError` naming the directory and the holder.  :meth:`release` removes the
    file if it is still this process's.  Also a context manager.
    """

    FILENAME = "actionkit.lock"

    def __init__(self, directory: str | os.PathLike, logger: logging.Logger | None = None):
        self.directory = Path(directory)
        self.path = self.directory / self.FILENAME
        self.logger = logger or _LOG
        self.held = False
        self._record: dict[str, Any] = {}

    def __enter__(self) -> "WorkDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _new_record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": process_start_ticks(os.getpid()),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)[:300]}

    def _create(self, record: dict[str, Any]) -> bool:
        """Create the lock file holding ``record``; False when it exists.  The content is written to a
        private file first and hard-linked into place, so a reader never sees a half-written lock."""
        tmp = self.directory / f".{self.FILENAME}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError as exc:  # file systems without hard links: exclusive create
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(record, f)
            return True
        except OSError as exc:
            raise _naming(exc, self.path) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def read_holder(self) -> dict[str, Any] | None:
        """The lock file's record; ``{}`` when it cannot be parsed; ``None`` when there is no lock file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        try:
            pid = int(holder["pid"])
        except (KeyError, TypeError, ValueError):
            return True  # unreadable lock: nothing identifies a holder
        if holder.get("host") != socket.gethostname():
            return False
        if not pid_alive(pid):
            return True
        recorded, now = holder.get("proc_start"), process_start_ticks(pid)
        return recorded is not None and now is not None and int(recorded) != now  # pid recycled

    @staticmethod
    def describe(holder: dict[str, Any]) -> str:
        if not holder:
            return "an unreadable lock"
        cmd = f", command: {holder['command']}" if holder.get("command") else ""
        return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} "
                f"(started {holder.get('started', '?')}{cmd})")

    def acquire(self) -> None:
        if self.held:
            return
        record = self._new_record()
        for _ in range(5):
            if self._create(record):
                self.held, self._record = True, record
                return
            with self._takeover_guard():
                holder = self.read_holder()
                if holder is None:  # released meanwhile
                    continue
                if not self._is_stale(holder):
                    remote = holder.get("host") != socket.gethostname()
                    hint = (" (it runs on another host; if it has ended, delete the lock file)" if remote
                            else "; wait for it to end or use another --work-dir")
                    raise WorkDirLockedError(self.path, f"the work directory {self.directory} is in use by "
                                             f"{self.describe(holder)}{hint}: {self.path}")
                self.logger.warning("taking over the stale lock %s of %s (no longer running)", self.path,
                                    self.describe(holder))
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                if self._create(record):
                    self.held, self._record = True, record
                    return
        raise WorkDirLockedError(self.path, f"could not take the lock of the work directory {self.directory} "
                                 f"(other processes keep taking it): {self.path}")

    @contextlib.contextmanager
    def _takeover_guard(self) -> Iterator[None]:
        """Serialises stale-lock take-overs on this host (``flock`` on the directory itself), so that two
        starting runs cannot both remove a stale lock and each create its own."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # file systems without flock (some network mounts): unguarded
                pass
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def release(self) -> None:
        """Remove the lock file if this process still holds it (a no-op otherwise)."""
        if not self.held:
            return
        self.held = False
        holder = self.read_holder()
        if holder and holder.get("pid") == self._record.get("pid") and holder.get("host") == self._record.get("host"):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
