"""The backup archive: one gzipped tar per tenant, written atomically, verified before any use.

Layout (``manifest.json`` first, so what an archive holds is read without unpacking it)::

    manifest.json      format and version, tenant, app, backend, dump kind, schema revision,
                       row counts per table, size and sha256 of every other member, created_at
    database.sqlite3   SQLite, from the online backup API      | database.sql (pg_dump)
                                                               | database/... (portable dump)
    files/<path>       the instance folder's files: secret_key, config.py, uploads

:func:`write_archive` writes a hidden temporary file beside the final name, syncs it and links
it into place, so a file with an archive's name is always a whole archive: a full disk, a
crash or a kill leaves at most a ``.*.tmp`` file. :func:`open_archive` checks every member
against the manifest while staging it in a folder, before anything is restored from it::

    path, manifest = write_archive(folder, "acme-20261201T030000Z", manifest, sources)
    archive = open_archive(path, staging)        # archive.staged["database.sqlite3"] -> path
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import hashlib
import io
import json
import os
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from .errors import BackupError

FORMAT = "dispatcher-backup"
#: The archive format this code writes; it reads this one and older ones.
VERSION = 1
MANIFEST = "manifest.json"
SUFFIX = ".tar.gz"
#: The member each kind of dump (the manifest's ``dump``) is restored from.
DUMP_MEMBERS = {
    "sqlite": "database.sqlite3",
    "pg_dump": "database.sql",
    "portable": "database/schema.json",
}
#: Top-level names an archive may hold besides the manifest.
_TOP = ("database.sqlite3", "database.sql", "database", "files")
#: gzip level 1: measured on 24 MiB of notes, 0.8 s and 9.0 MiB, where level 6 takes 1.8 s
#: for 8.3 MiB; the compression is most of a backup's time (docs/benchmarks.md).
COMPRESSION = 1
_CHUNK = 1 << 20
_MANIFEST_LIMIT = 16 << 20


@dataclass(frozen=True)
class Manifest:
    """What an archive holds; ``members`` maps each member's name to its size and sha256."""

    tenant: str
    app: str
    backend: str
    #: ``sqlite``, ``pg_dump`` or ``portable``; ``None`` when the tenant had no database yet.
    dump: str | None
    revision: str | None
    tables: dict[str, int]
    created_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    @property
    def files(self) -> list[str]:
        """The instance files, as paths relative to the instance folder."""
        return sorted(name[len("files/") :] for name in self.members if name.startswith("files/"))

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Read a manifest; a clear error when it is not one this code can use."""
        try:
            raw = json.loads(data)
        except ValueError:
            raise BackupError(f"{where} is damaged: its manifest.json is not valid JSON") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackupError(f"{where} is not a dispatcher backup (its manifest says otherwise)")
        version = raw.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            # Missing or not a number: damage (a flipped bit), not a version from the future.
            raise BackupError(f"{where} is damaged: its manifest.json is incomplete or malformed")
        if version > VERSION:
            raise BackupError(
                f"{where} was written by a newer dispatcher (archive format {version}, this "
                f"one reads up to {VERSION}); restore it with that version"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in raw.items() if k in names})
            valid = (
                all(isinstance(getattr(manifest, k), str) for k in ("tenant", "app", "backend"))
                and all(isinstance(v, int) for v in manifest.tables.values())
                and all(_member_ok(k, v) for k, v in manifest.members.items())
            )
        except (TypeError, AttributeError):
            valid = False
        if not valid:
            raise BackupError(f"{where} is damaged: its manifest.json is incomplete or malformed")
        return manifest


def _member_ok(name: Any, entry: Any) -> bool:
    return (
        _safe_name(name)
        and isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("sha256"), str)
    )


def _safe_name(name: Any) -> bool:
    """A relative path below one of the known top-level names, without ``..`` or oddities."""
    if not isinstance(name, str) or "\\" in name or "\x00" in name:
        return False
    path = PurePosixPath(name)
    parts = name.split("/")
    return (
        not path.is_absolute()
        and parts[0] in _TOP
        and all(part not in ("", ".", "..") for part in parts)
    )


@dataclass(frozen=True)
class Opened:
    """An archive whose members were all verified and staged."""

    path: str
    manifest: Manifest
    #: The folder the members were staged in, under their names.
    folder: str
    #: Member name -> the staged file's path.
    staged: dict[str, str]


def create(path: str) -> IO[bytes]:
    """A new file, private (0600), never one that exists: every file a backup writes."""
    return os.fdopen(
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb"
    )


def sha256_of(path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _Hashing(io.RawIOBase):
    """Reads a file for tarfile, hashing what passes."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.digest = f, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.digest.update(data)
        return data


def write_archive(
    folder: str, stem: str, manifest: Manifest, sources: dict[str, str]
) -> tuple[str, Manifest]:
    """Write ``stem.tar.gz`` (``stem-1.tar.gz``... if taken) in ``folder``: the manifest, with
    the size and sha256 of every source filled in, then each ``member name -> file``."""
    try:
        sums = {name: sha256_of(path) for name, path in sources.items()}
    except OSError as e:
        raise BackupError(f"cannot read {e.filename} ({e.strerror}); run the backup again") from e
    members = {name: {"size": size, "sha256": sha} for name, (size, sha) in sums.items()}
    manifest = dataclasses.replace(manifest, members=members)
    temporary = os.path.join(folder, f".{stem}{SUFFIX}.{os.getpid()}.tmp")
    try:
        with create(temporary) as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=COMPRESSION) as tar:
                data = manifest.to_json()
                tar.addfile(_info(MANIFEST, len(data)), io.BytesIO(data))
                for name, path in sources.items():
                    _add(tar, name, path, members[name])
            raw.flush()
            os.fsync(raw.fileno())
        path = _link_into_place(temporary, folder, stem)
    except OSError as e:
        raise disk_error(e, f"cannot write the archive in {folder}") from e
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path, manifest


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info


def _add(tar: tarfile.TarFile, name: str, path: str, expected: dict[str, Any]) -> None:
    with open(path, "rb") as f:
        reader = _Hashing(f)
        try:
            tar.addfile(_info(name, expected["size"]), reader)
        except OSError as e:
            if "unexpected end of data" not in str(e):
                raise
            reader.digest = hashlib.sha256()  # it shrank: report it as changed, below
    if reader.digest.hexdigest() != expected["sha256"]:
        raise BackupError(
            f"{path} changed while it was being backed up; run the backup again (nothing was "
            "written)"
        )


def _link_into_place(temporary: str, folder: str, stem: str) -> str:
    """Give the finished file its final name, never replacing an archive that has it."""
    for n in range(1000):
        path = os.path.join(folder, f"{stem}{SUFFIX}" if n == 0 else f"{stem}-{n}{SUFFIX}")
        try:
            os.link(temporary, path)
        except FileExistsError:
            continue
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a power cut too
        finally:
            os.close(directory)
        return path
    raise BackupError(f"{folder} already holds 1000 archives named {stem}*")


def disk_error(error: OSError, what: str) -> BackupError:
    """A full disk, or another error writing, as one sentence."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackupError(f"{what}: no space left on the device; nothing was written")
    return BackupError(f"{what}: {error.strerror or error}")


def read_manifest(path: str) -> Manifest:
    """The manifest of the archive at ``path`` (its first member), without unpacking the rest."""
    with _reading(path) as tar:
        return _manifest(tar, path)


def open_archive(path: str, staging: str) -> Opened:
    """Verify every member of the archive against its manifest while staging it in ``staging``.

    Refuses, naming the reason, anything that is not a whole archive written by this format:
    not gzip or tar, truncated, a member missing, extra, altered (sha256) or not a plain file,
    a path leaving the staging folder.
    """
    staged: dict[str, str] = {}
    with _reading(path) as tar:
        manifest = _manifest(tar, path)
        while (member := tar.next()) is not None:
            name = member.name
            expected = manifest.members.get(name)
            if expected is None or name in staged or not member.isfile():
                raise BackupError(
                    f"{path}: unexpected member '{name}' (not in its manifest, repeated or not a "
                    "plain file); this is not an archive the dispatcher wrote"
                )
            target = os.path.join(staging, *name.split("/"))
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            size, digest = 0, hashlib.sha256()
            try:
                with source, create(target) as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            except gzip.BadGzipFile:
                raise  # damaged: reported as such when the archive is closed
            except OSError as e:
                raise disk_error(e, f"cannot unpack {path} into {staging}") from e
            if (size, digest.hexdigest()) != (expected["size"], expected["sha256"]):
                raise BackupError(
                    f"{path} is damaged: '{name}' does not match its checksum (corrupted or "
                    "changed since it was written); use another archive"
                )
            staged[name] = target
    missing = sorted(set(manifest.members) - set(staged))
    if missing:
        raise BackupError(f"{path} is incomplete: {', '.join(missing)} missing")
    return Opened(path, manifest, staging, staged)


_DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[tarfile.TarFile]:
    """Open an archive for reading; damaged or truncated gzip/tar data becomes a clear error."""
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 (closed below, after the yield)
    except _DAMAGED as e:
        raise _damaged(path, e) from None
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        yield tar
    except _DAMAGED as e:
        raise _damaged(path, e) from None
    finally:
        tar.close()


def _damaged(path: str, error: BaseException) -> BackupError:
    return BackupError(
        f"{path} is not a readable backup archive (damaged or truncated: {error}); "
        "use another archive"
    )


def _manifest(tar: tarfile.TarFile, path: str) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise BackupError(f"{path} is not a dispatcher backup (no manifest.json first)")
    source = tar.extractfile(first)
    assert source is not None
    return Manifest.from_json(source.read(_MANIFEST_LIMIT), path)
