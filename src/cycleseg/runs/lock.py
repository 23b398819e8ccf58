"""One process per run: the lock (RUN/.lock) that every command writing into a run holds.

Two processes writing into one run directory file one run's results under the other's config (a resume beside
a running trainer, --overwrite under it, a requeued job beside a resume by hand). Every command that writes
into a run holds RUN/.lock with an exclusive flock for as long as it works on the run; a second writer is
refused before it writes or removes anything. The kernel drops a flock when its process dies (SIGKILL, OOM,
a lost node's lease on NFS), so no lock outlives its holder. The file itself is never removed (--overwrite
keeps it): a lock on a removed and re-created file would not exclude anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cycleseg.errors import RunError
from cycleseg.fileio import not_a_file, open_for_writing, require_file
from cycleseg.runs.files import _now, read_status, write_json
from cycleseg.runs.paths import LOCK, STATUS

LOCK_ENV = "CYCLESEG_RUN_LOCK"  # "off": no locking, for file systems without flock (the guarantee is then gone)
_IN_USE = "in_use"  # run.json: the holder while a writer works on the run (None once it let go)
_RETRIES = 5  # a reader's probe holds the lock for microseconds: a writer tries a few times before refusing
_F = TypeVar("_F", bound=Callable[..., Any])
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_held: dict[str, list[Any]] = {}  # resolved run directory -> [descriptor, holders in this process, holder record]


class RunInUse(RunError):
    """Another process holds the run's lock: `holder` is what it wrote into RUN/.lock (pid, host, command, since;
    {} when that could not be read)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder

    @staticmethod
    def describe(run_dir: str | Path, holder: dict[str, Any]) -> str:
        """The one line a refused writer sees: who holds the run since when, and what to do."""
        return _in_use_message(Path(run_dir), holder)


class RunLock:
    """The lock of one run directory for this process: `acquire()` (idempotent) takes it or raises RunInUse naming
    the holder, `release()` lets go; `with RunLock(run)` does both. Nested holders in one process share it (a
    sweep's run_one holds it across train and evaluate), the lock goes when the last one lets go.

    `command` describes this process to a refused writer (default: the command line); `sweep` is the sweep folder
    when a sweep launcher works on the run (`cycleseg sweep status` then shows the run as its own, not as in use
    elsewhere). `enabled=False` makes every call a no-op (the ranks > 0 of torchrun: rank 0 holds it for all).
    """

    def __init__(self, run_dir: str | Path, command: str | None = None, sweep: str | Path | None = None,
                 enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.command, self.sweep = command, sweep
        self.enabled = enabled and os.environ.get(LOCK_ENV, "").lower() not in ("off", "0", "no", "false")
        self.locked = False

    def acquire(self, create: bool = False) -> RunLock:
        """Take the lock (RunInUse if another process holds it). A folder that does not exist holds no run and is
        not locked, unless `create`: then it is made (a new run's folder) and locked."""
        if self.locked or not self.enabled:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunError(f"{self.run_dir}: exists and is not a folder; choose another --out")
        if not self.run_dir.is_dir():
            if not create:
                return self
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RunError(f"{self.run_dir}: cannot create the run folder ({e.strerror}); choose another --out") \
                    from None
        key = _lock_key(self.run_dir)
        if key not in _held:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command or _command_line(),
                      "since": _now(), **({"sweep": str(Path(self.sweep).resolve())} if self.sweep else {})}
            _held[key] = [_take(self.run_dir, holder), 0, holder]
        _held[key][1] += 1
        self.locked = True
        return self

    def release(self) -> None:
        if not self.locked:
            return
        self.locked = False
        key = _lock_key(self.run_dir)
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        try:
            with contextlib.suppress(RunError, OSError):  # never hide the error that ends the holder
                _note_in_use(self.run_dir, None)
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                fcntl.flock(entry[0], fcntl.LOCK_UN)  # for forked children too, which share the open file
            os.close(entry[0])

    def __enter__(self) -> RunLock:  # noqa: PYI034
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_lock(run_dir: str | Path, command: str | None = None, create: bool = False,
             sweep: str | Path | None = None) -> contextlib.AbstractContextManager[RunLock]:
    """`with run_lock(RUN, "cycleseg evaluate"):` the block runs holding RUN's lock (RunInUse, before anything
    is written, while another process holds it); `create`: make the folder of a new run first."""
    lock = RunLock(run_dir, command, sweep)

    @contextlib.contextmanager
    def held() -> Iterator[RunLock]:
        lock.acquire(create=create)
        try:
            yield lock
        finally:
            lock.release()

    return held()


def writes_into_run(when: Callable[[dict[str, Any]], bool] | None = None) -> Callable[[_F], _F]:
    """Decorator of a command that writes into the run directory given as its `run_dir` argument: it runs holding
    that run's lock (RunInUse before it reads or writes anything while another process holds it). `when`, given
    the call's arguments by name, says whether this call writes into the run at all (predict into another folder
    does not)."""
    def decorate(func: _F) -> _F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with RunLock(bound.arguments["run_dir"], enabled=when is None or when(bound.arguments)):
                return func(*args, **kwargs)
        return locked  # type: ignore[return-value]
    return decorate



def run_in_use(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder of RUN's lock (pid, host, command, since; {} when its record cannot be read), or None when no
    process holds it. A non-blocking probe for readers (`sweep status`): it never waits and takes nothing that a
    writer would notice but for a moment it retries over. RunError naming RUN/.lock when it is a link, FIFO or
    device (never opened: a FIFO would block the reader; every writer refuses it too)."""
    run_dir = Path(run_dir)
    entry = _held.get(_lock_key(run_dir)) if run_dir.is_dir() else None
    if entry is not None:
        return dict(entry[2])
    path = run_dir / LOCK
    if not require_file(path, follow=False):  # a link, FIFO or device: RunError naming it (opening could block)
        return None  # no lock file: never locked (a run from before the lock, or no run)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # removed meanwhile, or no permission to read it: cannot tell
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise not_a_file(path, "not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError:
            return None  # a file system without locks: cannot tell
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _take(run_dir: Path, holder: dict[str, Any]) -> int:
    """Open RUN/.lock, flock it exclusively, write `holder` into it; the descriptor. RunInUse when it is held."""
    path = run_dir / LOCK
    try:  # never through a link, never a FIFO or device: RunError naming it, nothing written anywhere
        fd = open_for_writing(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunError(f"{path}: cannot open the run's lock file ({e.strerror}); fix the folder's permissions") \
            from None
    try:
        for attempt in range(_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _RETRIES - 1:
                    other = _read_holder(fd)
                    raise RunInUse(_in_use_message(run_dir, other), other) from None
                time.sleep(0.05)
            except OSError as e:
                raise RunError(f"{path}: this file system refuses locks ({e.strerror}); mount it with locking "
                               f"(Lustre: -o flock; NFS: without -o nolock), keep runs on a local disk, or set "
                               f"{LOCK_ENV}=off and make sure yourself that one process works on a run") from None
        os.ftruncate(fd, 0)  # written in place: replacing the file would make a second, unlocked one
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder record in the open RUN/.lock; {} while it is being written or when it is not ours."""
    for _ in range(_RETRIES):
        with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
            holder = json.loads(os.pread(fd, 1 << 16, 0).decode())
            if isinstance(holder, dict):
                return holder
        time.sleep(0.02)  # the holder truncates, then writes: an empty file for a moment
    return {}


def _in_use_message(run_dir: Path, holder: dict[str, Any]) -> str:
    """The one line a refused writer sees: who holds the run since when, and what to do."""
    if not holder.get("pid"):
        return (f"{run_dir}: in use by another process (its lock file {LOCK} names none); wait until it ends, "
                "then try again")
    pid, host = holder["pid"], holder.get("host", "?")
    command = " ".join(str(holder.get("command", "?")).split())
    where = "" if host == socket.gethostname() else f" on {host}"
    return (f"{run_dir}: in use by `{command}` (pid {pid} on {host}, since {holder.get('since', '?')}); wait until "
            f"it ends, or stop it (kill {pid}{where}) and try again")


def _note_in_use(run_dir: Path, holder: dict[str, Any] | None) -> None:
    """run.json's note of the writer at work: create_run and set_status write it while this process holds the
    lock (readers see the run is in use); removed here when it lets go (a killed holder leaves it: the lock
    itself, `run_in_use`, is what counts)."""
    status = read_status(run_dir)
    if not status or status.get(_IN_USE) == holder:
        return
    if holder is None and (status.get(_IN_USE) or {}).get("pid") != os.getpid():
        return
    status[_IN_USE] = holder
    write_json(run_dir / STATUS, status)


def _holder_of(run_dir: Path) -> dict[str, Any] | None:
    """The holder record of this process's lock on `run_dir`, or None."""
    entry = _held.get(_lock_key(run_dir)) if run_dir.is_dir() else None
    return entry[2] if entry else None


def _lock_key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def _command_line() -> str:
    """This process's command line, shortened, for a refused writer's message."""
    argv = list(sys.argv) or ["python"]
    path = Path(argv[0])
    # the package is the last folder named cycleseg (a checkout may be named cycleseg too)
    package = max((i for i, part in enumerate(path.parts) if part == "cycleseg"), default=None) if path.suffix else None
    module = list(path.with_suffix("").parts[package:]) if package is not None else []
    if module[-1:] == ["__main__"] or module[-1:] == ["__init__"]:
        module.pop()
    if path.name == "cycleseg" or module == ["cycleseg", "cli"]:  # the console script, or python -m cycleseg.cli
        name = "cycleseg"
    elif module:
        name = "python -m " + ".".join(module)
    else:
        name = path.name
    return " ".join([name, *argv[1:]])[:200]


def _forget_locks_after_fork() -> None:
    """A forked child (a DataLoader worker) holds no lock of its own: only its parent lets go of them."""
    for fd, _, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_after_fork)
