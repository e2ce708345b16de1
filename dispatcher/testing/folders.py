"""An instance folder as its app's build left it, and putting a folder back to that.

A test may write, change or delete files in its tenant's instance folder (uploads, a SQLite
database); the next test must find the folder as a new tenant's. :class:`FolderImage` keeps
the built folder (its files' bytes in memory, the large ones on disk) and
:meth:`FolderImage.restore` compares a folder with it by content, rewriting only what differs:
a test that wrote nothing costs a few reads. (Comparing modification times, as ``rsync``
does, is not enough: ext4 stamps files with a clock that ticks every few milliseconds, and
a test can be faster than that.)

A changed file is replaced by a new one (unlink, then write), never rewritten in place: a
SQLite connection the test left open keeps the old file and can never write into the next
test's. (``os.replace`` over an existing file would do as well, but ext4 flushes the data
of a file renamed over another, about 2 ms here.)::

    image = FolderImage(folder, keep=tmp / "template")     # right after the build
    ...                                                     # a test
    image.restore(folder, databases={"app.db"})
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Collection
from pathlib import Path

#: Files up to this size are kept in memory and compared there; larger ones on disk.
_IN_MEMORY = 4 * 1024 * 1024
#: What a SQLite connection keeps beside its database while it is open.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class FolderImage:
    """The files and folders under a folder, to compare others with and put them back."""

    def __init__(self, folder: Path, keep: Path) -> None:
        shutil.copytree(folder, keep, symlinks=True)
        self.root = keep
        self.contents: dict[Path, bytes] = {}
        for parent, _, files in os.walk(keep):
            for name in files:
                path = Path(parent, name)
                if not path.is_symlink() and path.stat().st_size <= _IN_MEMORY:
                    self.contents[path] = path.read_bytes()

    def restore(self, folder: Path, databases: Collection[str] = ()) -> None:
        """Make ``folder`` hold what the image holds. ``databases`` (SQLite files, relative
        to the folder) are replaced whenever a connection may still be open on them."""
        open_databases = {
            name
            for name in databases
            if any(os.path.lexists(folder / f"{name}{side}") for side in _SQLITE_SIDE_FILES)
        }
        self._restore(self.root, folder, {self.root / name for name in open_databases})
        os.chmod(folder, stat.S_IMODE(os.stat(self.root).st_mode))  # 0700, as built

    def _restore(self, image: Path, folder: Path, replace: set[Path]) -> None:
        for entry in os.scandir(folder):
            source = image / entry.name
            if not os.path.lexists(source) or entry.is_dir(follow_symlinks=False) != (
                source.is_dir() and not source.is_symlink()
            ):
                _remove(Path(entry.path))
        for entry in os.scandir(image):
            source, target = Path(entry.path), folder / entry.name
            if entry.is_dir(follow_symlinks=False):
                if target.is_symlink() or not target.is_dir():
                    _remove(target)
                    target.mkdir(mode=stat.S_IMODE(entry.stat().st_mode))
                self._restore(source, target, replace)
            elif source in replace or not self._same(entry, target):
                _remove(target)
                if entry.is_symlink():
                    os.symlink(os.readlink(source), target)
                elif source in self.contents:
                    mode = stat.S_IMODE(entry.stat().st_mode)
                    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                    with open(descriptor, "wb") as f:
                        f.write(self.contents[source])
                else:
                    shutil.copy2(source, target)

    def _same(self, entry: os.DirEntry[str], target: Path) -> bool:
        """Whether ``target`` is the same kind of file as ``entry``, with the same bytes."""
        try:
            now = os.lstat(target)
        except FileNotFoundError:
            return False
        then = entry.stat(follow_symlinks=False)
        if (now.st_mode, now.st_size) != (then.st_mode, then.st_size):
            return False
        if stat.S_ISLNK(then.st_mode):
            return os.readlink(target) == os.readlink(entry.path)
        expected = self.contents.get(Path(entry.path))
        if expected is not None:
            with open(target, "rb") as f:
                return f.read() == expected
        return _same_bytes(Path(entry.path), target)


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as one, open(b, "rb") as other:
        while True:
            chunk = one.read(1 << 20)
            if chunk != other.read(1 << 20):
                return False
            if not chunk:
                return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
