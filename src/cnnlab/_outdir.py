"""Output directories that cnnlab owns: a marker, one writer at a time, and an ``--overwrite`` that removes
only what cnnlab wrote.

Every folder a command writes its results into (a run, a compressed run, an experiment, a comparison, a
sweep, a visualisation) is *claimed* first (:func:`claim_output`):

* a marker file, ``.cnnlab`` (JSON: what kind of output, which command made it), says the folder is a cnnlab
  output; a folder without it is recognised only if everything in it has the names that kind of output writes
  (runs made before the marker existed);
* an advisory lock (``fcntl.flock`` on ``.cnnlab.lock``, which also names the holder: pid, command, start
  time) is held for the whole command, so a second command writing into the same folder gets one line
  naming the first instead of mixing its files in. The kernel releases the lock when the holder dies
  (SIGKILL included): a lock never goes stale;
* clearing (:meth:`Output.clear`, what ``--overwrite`` does) removes only the files and folders of the
  output's :class:`Layout`, and refuses, before removing anything, a folder that holds anything else;
  ``/``, the home folder, the current folder and the folders above them are never cleared, nor a folder
  that is, holds or lies inside an input of the command;
* temporary files that a killed writer left (``.NAME.XXXX.tmp`` from :mod:`cnnlab._io`, a partial folder)
  are removed when the next writer claims the folder;
* a command that fails before writing anything of value leaves no folder behind (:meth:`Output.release`).

Only the standard library: the module sits below ``data`` and ``train``.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from cnnlab import __version__
from cnnlab._io import atomic_write_json
from cnnlab.errors import CnnlabError

__all__ = ["MARKER", "LOCK", "Layout", "Output", "OutputError", "OutputBusyError", "claim_output",
           "check_output_file", "RUN", "COMPRESSED_RUN", "VIZ", "SWEEP", "EXPERIMENT", "COMPARE", "LECTURE"]

MARKER = ".cnnlab"
LOCK = ".cnnlab.lock"
#: A folder inside an output where a writer builds files before moving them into place.
PARTIAL = ".cnnlab-partial"
_OWN = (MARKER, LOCK)
#: What cnnlab._io.atomic_path leaves behind when its writer is killed.
_ORPHAN_PATTERNS = (".*.tmp",)


class OutputError(CnnlabError):
    """An output folder that cnnlab will not write into or clear; the message says why."""


class OutputBusyError(OutputError):
    """Another cnnlab process holds the output folder's lock."""


@dataclass(frozen=True)
class Layout:
    """What one kind of output holds.

    ``files``: names or ``fnmatch`` patterns of the files cnnlab writes there. ``dirs``: subfolders cnnlab
    writes, each with its own layout (cleared with it). ``children``: the kinds of other cnnlab outputs the
    folder may hold as subfolders (an experiment's runs); those are never removed by clearing the parent
    (each is claimed and cleared on its own). ``signatures``: files any one of which, with nothing but known
    names beside it, recognises an output written before markers existed.
    """

    kind: str
    files: tuple[str, ...]
    dirs: Mapping[str, "Layout"] = field(default_factory=dict)
    children: tuple["Layout", ...] = ()
    signatures: tuple[str, ...] = ()

    def knows_file(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in (*self.files, *_OWN, *_ORPHAN_PATTERNS))


def _is_output(path: Path) -> bool:
    try:
        return "cnnlab" in json.loads((path / MARKER).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _kind(path: Path) -> str | None:
    """The kind of output the marker in ``path`` names, or None."""
    try:
        kind = json.loads((path / MARKER).read_text()).get("kind")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _foreign(path: Path, layout: Layout) -> list[str]:
    """The entries of ``path`` (relative names) that ``layout`` does not account for."""
    out = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    for e in entries:
        if e.name == PARTIAL and e.is_dir(follow_symlinks=False):
            continue
        if e.is_dir(follow_symlinks=False):
            sub = layout.dirs.get(e.name)
            if sub is not None:
                out += [f"{e.name}/{n}" for n in _foreign(Path(e.path), sub)]
            elif not any(_recognised(Path(e.path), child) for child in layout.children):
                out.append(e.name + "/")
        elif not layout.knows_file(e.name) or e.is_symlink():
            out.append(e.name)
    return out


def _recognised(path: Path, layout: Layout) -> bool:
    """Whether ``path`` is a cnnlab output (its marker), or one of ``layout``'s kind written before markers:
    nothing but the layout's names, with its signature file or (a folder of outputs) one of its outputs."""
    if _is_output(path):
        return True
    if _foreign(path, layout):
        return False
    names = os.listdir(path)
    if all(n in _OWN or any(fnmatch.fnmatchcase(n, p) for p in _ORPHAN_PATTERNS) for n in names):
        return True  # nothing but a lock or the temporary files of a killed writer
    if any((path / n).is_file() for n in layout.signatures):
        return True
    return bool(layout.children) and any((path / n).is_dir() for n in names)


def _listing(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _protected(resolved: Path) -> str | None:
    """Why ``resolved`` may never be cleared, or None."""
    if resolved == Path(resolved.anchor):
        return "the root folder"
    for what, p in (("the home folder", Path.home()), ("the current folder", Path.cwd())):
        try:
            p = p.resolve()
        except OSError:
            continue
        if resolved == p:
            return what
        if p.is_relative_to(resolved):
            return f"a folder above {what}"
    return None


def _holder(lock: Path) -> str:
    try:
        h = json.loads(lock.read_text())
        return f"pid {h['pid']}, `{h['command']}`, since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid unknown"


class Output:
    """A claimed output folder: the lock is held until :meth:`release` (or the ``with`` block ends)."""

    def __init__(self, path: Path, layout: Layout, flag: str, created: bool, fd: int) -> None:
        self.path, self.layout, self.flag, self.created, self._fd = path, layout, flag, created, fd

    # ---------------------------------------------------------------- what is there
    def entries(self) -> list[str]:
        """Names in the folder besides the marker, the lock and a partial folder."""
        try:
            return sorted(n for n in os.listdir(self.path) if n not in (*_OWN, PARTIAL))
        except OSError:
            return []

    def foreign(self) -> list[str]:
        return _foreign(self.path, self.layout)

    def check_clearable(self) -> None:
        """Raise :class:`OutputError` if :meth:`clear` would refuse (anything cnnlab did not write is there)."""
        foreign = self.foreign()
        if foreign:
            raise OutputError(f"{self.flag} {self.path}: holds files cnnlab did not write ({_listing(foreign)}); "
                              "refusing to overwrite it: move them away or choose another "
                              f"{self.flag.split()[0]}")
        why = _protected(self.path.resolve())
        if why is not None and self.entries():
            raise OutputError(f"{self.flag} {self.path} is {why}; cnnlab never clears it: choose another "
                              f"{self.flag.split()[0]}")

    def clear(self) -> list[str]:
        """Remove what cnnlab wrote here (the layout's files and folders; other outputs inside are kept);
        return the names removed. Refuses, removing nothing, if anything else is there."""
        self.check_clearable()
        removed = []
        for name in self.entries():
            p = self.path / name
            if name in self.layout.dirs and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.is_dir() and not p.is_symlink():
                continue  # another cnnlab output (children): claimed and cleared on its own
            else:
                p.unlink()
            removed.append(name)
        return removed

    def partial(self) -> Path:
        """An empty folder inside the output to build files in before :meth:`publish` moves them into place."""
        p = self.path / PARTIAL
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir()
        return p

    def publish(self, last: str | None = None) -> None:
        """Move everything built in :meth:`partial` into the output (each one rename; ``last`` moved last, so
        its presence means the rest is there), then remove the partial folder."""
        p = self.path / PARTIAL
        names = sorted(os.listdir(p), key=lambda n: n == last)
        for name in names:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(p / name, target)
        p.rmdir()

    # ---------------------------------------------------------------- the lock
    def release(self, *, failed: bool = False) -> None:
        """Give the lock back. With ``failed``, an output that holds nothing (the command wrote nothing of
        value) is removed with its marker, and the folder too if this claim created it."""
        if self._fd < 0:
            return
        try:
            shutil.rmtree(self.path / PARTIAL, ignore_errors=True)
            if failed and not self.entries():
                for name in (MARKER, LOCK):  # the lock file last, while it is still held
                    (self.path / name).unlink(missing_ok=True)
                if self.created:
                    try:
                        self.path.rmdir()
                    except OSError:
                        pass
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = -1

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.release(failed=exc_type is not None)
        return False


def _command() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv[0] in ("__main__.py", "-m", "-c"):
        argv[0] = "cnnlab"
    return " ".join(argv)[:200]


def _lock(path: Path, flag: str) -> int:
    lock = path / LOCK
    for _ in range(3):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(f"{flag} {path}: in use by another cnnlab process ({_holder(lock)}); wait for it "
                                  f"to finish or choose another {flag.split()[0]}") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file that its holder removed while we waited for it
            return fd
        os.close(fd)
    raise OutputBusyError(f"{flag} {path}: its lock file keeps changing; another cnnlab process is using it")


def claim_output(path: str | os.PathLike, layout: Layout, *, flag: str = "--out",
                 inputs: Iterable[str | os.PathLike] = (), command: str | None = None) -> Output:
    """Claim ``path`` as an output of ``layout``'s kind for this process (see the module docstring).

    The folder is created if missing (with its parents), marked, and locked; leftovers of a killed writer are
    removed. Raises :class:`OutputError` (one line, naming ``flag``) if ``path`` is a file, cannot be written,
    holds anything but cnnlab's files of this kind, is ``/``, the home or current folder (or above them) and not
    empty, or is, holds or lies inside one of ``inputs``; :class:`OutputBusyError` if another process holds it.
    Nothing is removed here: :meth:`Output.clear` does that, for ``--overwrite``.
    """
    path = Path(path)
    word = flag.split()[0]
    if not str(path).strip():
        raise OutputError(f"{flag}: an empty path; give a folder")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: exists and is not a folder; choose another {word}")
    resolved = path.resolve()
    for inp in inputs:
        src = Path(inp).resolve()
        if resolved == src:
            raise OutputError(f"{flag} {path} is the input {inp}, which is only read; choose another {word}")
        if src.is_relative_to(resolved):
            raise OutputError(f"{flag} {path} holds the input {inp}; choose a folder that does not contain it")
        if resolved.is_relative_to(src):
            raise OutputError(f"{flag} {path} lies inside the input {inp}, which is only read; choose another {word}")
    existed = path.is_dir()
    try:
        ours = not existed or not os.listdir(path) or _recognised(path, layout)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    kind = _kind(path) if existed else None
    if kind is not None and kind != layout.kind:
        raise OutputError(f"{flag} {path}: holds a cnnlab {kind} output, not a {layout.kind}; choose another {word}")
    if not ours:
        foreign = _foreign(path, layout)
        raise OutputError(f"{flag} {path}: exists and holds files cnnlab did not write"
                          + (f" ({_listing(foreign)})" if foreign else "") + f"; choose another {word}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _lock(path, flag)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    out = Output(path, layout, flag, created=not existed, fd=fd)
    try:
        info = {"pid": os.getpid(), "command": command or _command(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        if not (path / MARKER).is_file():
            atomic_write_json(path / MARKER, {"cnnlab": __version__, "kind": layout.kind,
                                              "created": info["since"], "by": info["command"]})
        _remove_orphans(path, layout)
    except OSError as e:
        out.release(failed=True)
        raise OutputError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    except BaseException:
        out.release(failed=True)
        raise
    return out


def _remove_orphans(path: Path, layout: Layout) -> None:
    """Temporary files of a writer that was killed (we hold the lock: nobody else is writing)."""
    shutil.rmtree(path / PARTIAL, ignore_errors=True)
    for folder, lay in [(path, layout), *((path / n, sub) for n, sub in layout.dirs.items())]:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if any(fnmatch.fnmatchcase(name, p) for p in _ORPHAN_PATTERNS) and (folder / name).is_file():
                (folder / name).unlink(missing_ok=True)


def check_output_file(path: str | os.PathLike, *, overwrite: bool, flag: str, suffixes: tuple[str, ...],
                      ours=None) -> Path:
    """Check, before any work, that a single output file can be written at ``path``: its suffix is one of
    ``suffixes``, its folder is writable, and an existing file is replaced only with ``overwrite`` and only if
    ``ours(path)`` says cnnlab wrote it (when given)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{flag} {path}: must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name ending in {' or '.join(suffixes)}")
    if path.exists():
        if not overwrite:
            raise OutputError(f"{flag} {path}: exists; pass --overwrite to replace it")
        if ours is not None and not ours(path):
            raise OutputError(f"{flag} {path}: exists and was not written by cnnlab; refusing to overwrite it")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: cannot write there ({parent} is not a writable folder)")
    return path


# ---------------------------------------------------------------- what each command writes

VIZ = Layout("viz", ("*.png", "index.html", "viz.json", "faithfulness.json"), signatures=("viz.json",))
RUN = Layout("run", ("config.json", "model.json", "model.safetensors", "history.csv", "metrics.json", "curves.png",
                     "confusion.png"),
             dirs={"checkpoint": Layout("checkpoint", ("last.safetensors",)), "viz": VIZ},
             signatures=("config.json",))
COMPRESSED_RUN = Layout("compressed-run", ("config.json", "model.json", "model.cnnz", "compression.json",
                                           "metrics.json", "confusion.png"),
                        dirs={"viz": VIZ}, signatures=("compression.json",))
SWEEP = Layout("sweep", ("sweep.json", "sweep.md", "sweep.png"), children=(COMPRESSED_RUN,),
               signatures=("sweep.json",))
EXPERIMENT = Layout("experiment", ("comparison.json", "comparison.md", "transfer.json", "transfer.md", "transfer.png"),
                    children=(RUN, COMPRESSED_RUN, SWEEP), signatures=("comparison.json", "transfer.json"))
LECTURE = Layout("lecture", ("index.html", "lecture.json", "lecture.md"),
                  dirs={"figures": Layout("lecture-figures", ("*.png", "*.gif"))},
                  children=(RUN, COMPRESSED_RUN, SWEEP, EXPERIMENT), signatures=("lecture.json",))
COMPARE = Layout("compare", ("compare.json", "compare.md", "compare.png", "layers.json", "layers.md"),
                 children=(RUN, COMPRESSED_RUN, SWEEP), signatures=("compare.json", "layers.json"))
