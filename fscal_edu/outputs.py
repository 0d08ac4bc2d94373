"""Output folders: what a command may write, moving an old output aside, the lock of a run, and
stdout as an output its reader may leave.

One rule for every command that writes (``train --out``, ``prepare --out``, ``generate --out``,
``evaluate --out``): it never deletes or modifies what it did not create in this call.

* An output never lies on or inside a dataset directory, and never holds (or lies inside) one of
  the command's inputs: :func:`check_output` refuses before anything is read at length.
* ``--overwrite`` moves the old output aside to ``NAME.replaced-N`` (:func:`move_aside`), never
  deletes it.
* A run folder is trained into by one process at a time: :class:`RunLock` is the file
  ``.NAME.lock`` beside the folder, naming its holder (pid, host, start time, command). The
  operating system releases its lock when the holder dies (even by SIGKILL), so a lock file left
  by a dead process is seen as stale, reported and taken over; the holder removes it on every
  exit path it lives through.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
import warnings
from pathlib import Path

from .utils import FscalError, where

try:
    import fcntl
except ImportError:                 # Windows: the lock file alone (created exclusively)
    fcntl = None

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")


def run_files(out) -> list[str]:
    """The run files present in ``out`` (empty if ``out`` holds no run)."""
    out = Path(out)
    return [name for name in RUN_FILES if (out / name).exists()] if out.is_dir() else []


# ---------------------------------------------------------------------------------------------
# What an output may be
# ---------------------------------------------------------------------------------------------

def resolved(path, *, field: str = "--out") -> Path:
    """``path`` made absolute with its links followed; a link loop is bad input, not a crash."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:          # "Symlink loop from ..." (RuntimeError before 3.13)
        raise FscalError(f"{where(file=path, field=field)}: cannot be resolved ({e})") from None


def is_dataset(folder) -> bool:
    """A dataset directory: two of ``features.json``, ``annotations.json`` and a ``features/`` folder."""
    folder = Path(folder)
    return (folder / "features.json").is_file() + (folder / "annotations.json").is_file() \
        + (folder / "features").is_dir() >= 2


def is_run(folder) -> bool:
    """A run folder: ``config.json`` beside ``metrics.jsonl`` or ``last.pt``."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in ("metrics.jsonl", "last.pt"))


def dataset_at(path) -> Path | None:
    """The dataset directory that ``path`` is or lies inside (resolved), or None."""
    p = resolved(path)
    return next((d for d in (p, *p.parents) if d.is_dir() and is_dataset(d)), None)


def _nested(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def check_output(out, *, field: str = "--out", inputs=(), replace_dataset: bool = False,
                 overwrite: bool = False, run_ok: bool = False) -> Path:
    """``out`` checked before a command writes it; reads only. Refused, naming ``out`` and ``field``:

    * ``out`` on or inside a dataset directory (``replace_dataset``: ``out`` may *be* one, which
      ``--overwrite`` then moves aside; never inside one);
    * an input (file or folder) that is ``out`` or lies inside it, or a folder input that holds ``out``;
    * ``overwrite`` of the folder this process runs in (it cannot be moved aside from within);
    * unless ``run_ok`` (``train``, ``evaluate --out``), ``out`` on or inside a run folder.
    """
    path = Path(out)
    at, target = where(file=path, field=field), resolved(path, field=field)
    data = dataset_at(target)
    if data is not None and not (replace_dataset and data == target):
        inside = "is the dataset directory" if data == target else f"lies inside the dataset directory {str(data)!r}"
        raise FscalError(f"{at}: {inside}; write elsewhere, never among a dataset's files")
    run = None if run_ok else next((d for d in (target, *target.parents) if is_run(d)), None)
    if run is not None:
        raise FscalError(f"{at}: {'is' if run == target else 'lies inside'} the run folder {str(run)!r}; "
                         f"write elsewhere, never among a run's files")
    for given in inputs:
        if given is None:
            continue
        source = resolved(given, field="input")
        if source == target:
            raise FscalError(f"{at}: is the input {str(given)!r}; an output never overwrites its inputs")
        if _nested(source, target):
            raise FscalError(f"{at}: holds the input {str(given)!r}; an output never holds its inputs, "
                             f"choose another folder")
        if source.is_dir() and _nested(target, source):
            raise FscalError(f"{at}: lies inside the input folder {str(given)!r}; write elsewhere")
    if overwrite and path.exists() and _nested(Path.cwd().resolve(), target):
        raise FscalError(f"{at}: --overwrite would move aside the folder this command runs in; run "
                         f"it from another folder, or give another --out")
    return path


def check_output_file(path, *, field: str = "--out", inputs=(), overwrite: bool = False) -> Path:
    """An output *file* (``evaluate --out PRED.json``) checked before the work: its folder exists;
    it is not a folder, not among a dataset's files, not an input, not a checkpoint nor a file of a
    run folder (never written over, even with ``overwrite``); an existing file needs ``overwrite``
    (it is then moved aside by :func:`move_aside` just before the new one is written)."""
    path = Path(path)
    at = where(file=path, field=field)
    if not path.parent.is_dir():
        raise FscalError(f"{at}: the folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise FscalError(f"{at}: is a directory; give a file name such as PRED.json")
    check_output(path, field=field, inputs=inputs, run_ok=True)
    lock = path.name.startswith(".") and path.name.endswith(".lock")
    if path.suffix == ".pt" or lock or (path.name in RUN_FILES and run_files(path.parent)):
        raise FscalError(f"{at}: is a file of a run folder or a checkpoint; write elsewhere, never over "
                         f"a run's files")
    if path.is_file() and not overwrite:
        raise FscalError(f"{at}: the file exists; give a new name, or pass --overwrite (the old file is "
                         f"moved aside to {path.name}.replaced-N)")
    return path


def write_output_file(path, text: str) -> Path:
    """Write ``text`` to an output file checked by :func:`check_output_file`: an existing file is
    moved aside first, the new one written atomically; a device or a pipe (``/dev/stdout``,
    ``/dev/null``) is written as it is."""
    from .utils import atomic_write_text
    path = Path(path)
    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    if path.exists():
        move_aside(path)
    return atomic_write_text(path, text)


def move_aside(path, *, field: str = "--out", what: str = "what was there") -> Path:
    """Rename ``path`` (a file or a folder) to ``NAME.replaced-N`` (the first free N) beside it,
    with a warning line; returns the new name. Nothing is deleted."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    n = 1
    while (aside := path.with_name(f"{path.name}.replaced-{n}")).exists():
        n += 1
    os.replace(path, aside)
    warnings.warn(f"{where(file=path, field=field)}: moved {what} aside to {str(aside)!r}",
                  stacklevel=2)
    return aside


# ---------------------------------------------------------------------------------------------
# The lock of a run folder
# ---------------------------------------------------------------------------------------------

def lock_path(out) -> Path:
    """``.NAME.lock`` beside the run folder ``out`` (outside it: moving an old run aside keeps it)."""
    target = resolved(out, field="out")
    if not target.name:
        raise FscalError(f"{where(file=out, field='out')}: a run folder cannot be the file system's root; "
                         f"give a folder such as runs/NAME")
    return target.with_name(f".{target.name}.lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _holder_text(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"process {info.get('pid')} on host {info.get('host')!r} since {started} "
            f"(command: {str(info.get('command'))[:200]})")


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        info = {"pid": "?", "host": "?", "command": "(unreadable lock file)"}
    return info if isinstance(info, dict) else {}


class RunLock:
    """The lock of the run folder ``out``: :meth:`acquire` (or an error naming the holder and
    what to do), :meth:`release` (idempotent); also a context manager."""

    def __init__(self, out, command: str | None = None):
        self.out, self.path = Path(out), lock_path(out)
        self.command = command or shlex.join(sys.argv)
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy(self, info: dict) -> FscalError:
        return FscalError(f"{where(file=self.out, field='out')}: another training is writing this run folder: "
                          f"{_holder_text(info)}; wait for it to end, or train into another --out")

    def check_free(self) -> None:
        """Refuse now, naming the holder, if another process holds the lock (reads only; a
        command checks this first, so the refusal is about the lock, not about other settings)."""
        if fcntl is None or not self.path.is_file():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy(_read_holder(fd)) from None
        finally:
            os.close(fd)

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = self._open()
            if fd is None:
                continue                       # the file changed under us (released, taken over): again
            old = _read_holder(fd)
            if old:
                self._stale(fd, old)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "command": self.command}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
            os.fsync(fd)
            self.fd = fd
            return self
        raise FscalError(f"{where(file=self.path, field='lock')}: could not take the run folder's lock")

    def _open(self) -> int | None:
        """An open descriptor of the lock file, locked for this process; None to try again."""
        if fcntl is None:                                      # no advisory locks: create exclusively
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = os.open(self.path, os.O_RDONLY)
                info = _read_holder(fd)
                os.close(fd)
                if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
                        and not _alive(info["pid"]):
                    self._report_stale(info)
                    self.path.unlink(missing_ok=True)
                    return None
                raise self._busy(info) from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_holder(fd)
            os.close(fd)
            raise self._busy(info) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return fd

    def _stale(self, fd: int, old: dict) -> None:
        """A lock file nobody holds: left by a holder that died. On this host, reported and taken
        over; from another host (a shared disk, whose locks may not reach here), refused."""
        if old.get("host") != socket.gethostname():
            os.close(fd)
            raise FscalError(f"{where(file=self.path, field='lock')}: the run folder {str(self.out)!r} is "
                             f"marked as trained by {_holder_text(old)}, which this host cannot check; if "
                             f"no training runs there, delete {str(self.path)!r} and repeat the command")
        self._report_stale(old)

    def _report_stale(self, old: dict) -> None:
        dead = "no longer running" if not isinstance(old.get("pid"), int) or not _alive(old["pid"]) \
            else "no longer holding it"
        warnings.warn(f"{where(file=self.path, field='lock')}: took over the stale lock of "
                      f"{_holder_text(old)}, {dead}", stacklevel=3)

    def release(self) -> None:
        """Remove the lock file and let go of the lock (nothing if not held)."""
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------------
# stdout, an output its reader may leave
# ---------------------------------------------------------------------------------------------

class LeavableStdout:
    """stdout that its reader may leave (``| head -1``, ``| true``): after a broken pipe, what the
    command prints goes nowhere and its work goes on to the end (a run is not cut short by it)."""

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self.broken = True
                silence_stdout()
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.broken = True
                silence_stdout()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def silence_stdout() -> None:
    """After a broken pipe, point stdout at the null device so that the interpreter's last flush
    does not fail again (Python's documented way, see the ``signal`` module's SIGPIPE note)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # a stdout without a descriptor (captured)
        pass
