"""The instance files of a restore: staged beside the instance folders, swapped in by renames,
put back if the database cannot be restored (:mod:`dispatcher.lifecycle`).

Into its own tenant a restore brings back every instance file (``secret_key`` included) and
removes the ones the archive does not have; into another (``--as``, clone) ``secret_key`` and
``config.py`` are neither copied nor touched. A live SQLite file among them is written into
with the backup API, like the database, never replaced::

    with scratch(instance_root, "acme") as folder:
        files = InstanceFiles(tenant, opened, own_files=True)
        files.swap(os.path.join(folder, "replaced"))      # files.undo() puts them back
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator

from . import backup_sqlite as sqlite
from .backup import OWN_FILES, dispatchers_own
from .backup import instance_files as live_files
from .backup_archive import Opened, disk_error, sha256_of
from .errors import BackupError
from .isolation import SECRET_KEY_FILE, make_instance_folder
from .tenant import TenantConfig


@contextlib.contextmanager
def one_at_a_time(instance_root: str) -> Iterator[None]:
    """Refuse a second restore, clone or archive on the same instance root while one runs.

    An exclusive ``flock`` on the instance root folder itself (no lock file to leave behind),
    released when the command ends, however it ends.
    """
    if not os.path.isdir(instance_root):  # nothing there yet that two commands could share
        yield
        return
    folder = os.open(instance_root, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"another restore, clone or archive is running on {instance_root}; run this "
                "one when it is done (nothing was changed)"
            ) from None
        yield
    finally:
        os.close(folder)  # releases the lock


@contextlib.contextmanager
def scratch(instance_root: str, name: str) -> Iterator[str]:
    """A hidden folder in the instance root (the instance folder's file system, so staged
    files move into place by renaming), removed afterwards, with the root if made for it."""
    made_root = not os.path.isdir(instance_root)
    try:
        os.makedirs(instance_root, mode=0o700, exist_ok=True)
        path = tempfile.mkdtemp(prefix=f".restore-{name}.", suffix=".tmp", dir=instance_root)
    except OSError as e:
        raise disk_error(e, f"cannot write in {instance_root}") from e
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if made_root:
            with contextlib.suppress(OSError):
                os.rmdir(instance_root)  # only if still empty


class InstanceFiles:
    """The instance files a restore replaces: moved aside, then the archive's moved in."""

    def __init__(self, target: TenantConfig, opened: Opened, own_files: bool) -> None:
        self.folder = target.instance_path
        keep = () if own_files else OWN_FILES
        self.live = [f for f in live_files(target)[0] if f not in keep]
        self.incoming = {
            name.removeprefix("files/"): staged
            for name, staged in opened.staged.items()
            if name.startswith("files/") and name.removeprefix("files/") not in keep
        }
        # Never in an archive that `backup` wrote: moved in, one would replace the live database.
        own = sorted(f"files/{name}" for name in dispatchers_own(target, self.incoming))
        if own:
            raise BackupError(
                f"{opened.path} holds {', '.join(own)}: the tenant's database, its journals or "
                "the dispatcher's own files, which no backup holds. It was not written by "
                "`backup` (or was altered): nothing was changed"
            )
        # A live SQLite file is written into, like the database, never replaced.
        self.into = [
            f
            for f in self.incoming
            if f in self.live
            and sqlite.is_sqlite(self._live(f))
            and sqlite.is_sqlite(self.incoming[f])
        ]
        self.moved: list[str] = []
        self.placed: list[str] = []
        self.made_folder = False
        self.trash = ""

    def _live(self, name: str) -> str:
        return os.path.join(self.folder, *name.split("/"))

    def changed(self) -> list[str]:
        """Live files (the generated secret key aside) the archive would remove or change."""
        changed = []
        for name in self.live:
            if name == SECRET_KEY_FILE:
                continue
            incoming = self.incoming.get(name)
            if incoming is None or sha256_of(incoming) != sha256_of(self._live(name)):
                changed.append(name)
        return changed

    def swap(self, trash: str) -> None:
        self.trash = trash
        try:
            self.made_folder = not os.path.isdir(self.folder)
            make_instance_folder(self.folder)
            for name in self.live:
                if name not in self.into:
                    _move(self._live(name), os.path.join(trash, *name.split("/")))
                    self.moved.append(name)
            for name, staged in self.incoming.items():
                if name not in self.into:
                    _move(staged, self._live(name))
                    self.placed.append(name)
        except OSError as e:
            self.undo()
            raise disk_error(e, f"cannot put the instance files into {self.folder}") from e

    def write_sqlite_files(self) -> None:
        for name in self.into:
            sqlite.restore_into(self.incoming[name], self._live(name))

    def undo(self) -> None:
        """Put every live file back where it was."""
        for name in reversed(self.placed):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._live(name))
        for name in reversed(self.moved):
            _move(os.path.join(self.trash, *name.split("/")), self._live(name))
        if self.made_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _move(source: str, destination: str) -> None:
    os.makedirs(os.path.dirname(destination), mode=0o700, exist_ok=True)
    shutil.move(source, destination)
