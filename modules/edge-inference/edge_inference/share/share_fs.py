"""File operations confined to a share, and the share errors that only mean "not now".

Confinement: a path inside a share is walked one folder at a time from the share's root, each folder opened
with O_NOFOLLOW | O_DIRECTORY relative to the one before (dir fds), and the operation (rename, open, unlink,
stat) then runs relative to the last folder opened. A symlink anywhere on the path is refused (`OutsideShare`)
instead of followed, and because the operation uses the very folders that were checked, swapping a folder
for a symlink half-way cannot redirect it (no check-then-use race). A file is read through
`/proc/self/fd/<folder fd>/<name>`, which reaches exactly that folder, so the reader may take a path.

Errors: a network share answers a passing blip with EIO, ESTALE, ETIMEDOUT... (`is_transient`): the caller
keeps the frame and tries again. A writer that still holds a file open with a Windows share mode makes a
rename fail with EBUSY or EACCES (`is_busy`): the frame is not ready yet.

Cross-device moves (`move`) copy the bytes and the times only (no extended attributes: an SMB mount answers
listxattr with EIO), fsync the copy, rename it into place, and only then remove the source: a failure
half-way leaves the source for a retry.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from edge_inference.share.tempfiles import discard, temp_name

TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EHOSTDOWN,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)
BUSY_ERRNOS = frozenset({errno.EBUSY, errno.EACCES, errno.ETXTBSY})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20
_RENAME_NOREPLACE = 1


class OutsideShare(OSError):
    """A component of the path is a symlink (or vanished for one): following it would leave the share."""

    def __init__(self, rel_path: str, component: str) -> None:
        super().__init__(errno.ELOOP, f"{component!r} on the path is a symlink: not followed", rel_path)


def is_transient(exc: BaseException) -> bool:
    """A network share's passing error: the operation may work a moment later."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def is_busy(exc: BaseException) -> bool:
    """The file is held by its writer (an SMB sharing violation: EBUSY, or EACCES from cifs)."""
    return isinstance(exc, OSError) and not isinstance(exc, OutsideShare) and exc.errno in BUSY_ERRNOS


def split(rel_path: str) -> list[str]:
    """The components of a relative POSIX path, refusing anything that would leave the root (absolute, `..`,
    empty components, NUL, backslashes). Surrogate-escaped names (bytes that are not UTF-8) are kept."""
    if not rel_path or "\0" in rel_path or rel_path.startswith("/") or "\\" in rel_path:
        raise ValueError(f"invalid relative path {rel_path!r}")
    parts = rel_path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"relative path {rel_path!r} escapes the share")
    try:
        os.fsencode(rel_path)
    except UnicodeEncodeError:
        raise ValueError(f"relative path {rel_path!r} is not a file-system name") from None
    return parts


def open_dir(root: Path, parts: Sequence[str], *, create: bool = False) -> int:
    """A dir fd of `root/parts...`, every component opened without following a symlink (made when `create`)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                child = _open_child(fd, part)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = _open_child(fd, part)
            except NotADirectoryError:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise OutsideShare("/".join(parts), part) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(fd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=fd)


@contextlib.contextmanager
def parent(root: Path, rel_path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """(dir fd of the folder holding `rel_path`, its last name), the folder walked confined; closed after."""
    parts = split(rel_path)
    fd = open_dir(root, parts[:-1], create=create)
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat(root: Path, rel_path: str) -> os.stat_result:
    """The entry itself (a symlink is not followed), reached without following a symlink on the way."""
    with parent(root, rel_path) as (fd, name):
        return os.stat(name, dir_fd=fd, follow_symlinks=False)


@contextlib.contextmanager
def readable_path(root: Path, rel_path: str) -> Iterator[Path]:
    """A path that reaches `rel_path` through the folder fds checked here (`/proc/self/fd/<fd>/<name>`): a reader
    that opens it with O_NOFOLLOW reads that very file, whatever is swapped in on the way meanwhile."""
    with parent(root, rel_path) as (fd, name):
        yield Path(f"/proc/self/fd/{fd}") / name


def revalidate(path: Path) -> os.stat_result:
    """Open the file and stat the open file: on NFS the open revalidates the attribute cache (close-to-open),
    on SMB it asks the server; a writer holding the file with a deny share mode makes it fail (`is_busy`)."""
    fd = os.open(path, _READ_FLAGS)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def rename(src_root: Path, src_rel: str, dst_root: Path, dst_rel: str, *, replace: bool = True) -> None:
    """Rename inside one file system, both sides confined; the target's folders are made (once more, should the
    output retention remove an emptied one meanwhile). Without `replace` an existing target is never overwritten
    (FileExistsError)."""
    for last_try in (False, True):
        with parent(src_root, src_rel) as (sfd, sname), parent(dst_root, dst_rel, create=True) as (dfd, dname):
            try:
                if replace:
                    os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                else:
                    _rename_noreplace(sfd, sname, dfd, dname)
                return
            except FileNotFoundError:
                if last_try or not _exists(sfd, sname):
                    raise


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def move(src_root: Path, src_rel: str, dst_root: Path, dst_rel: str) -> None:
    """Rename; across file systems copy (bytes and times, fsync, rename into place), then remove the source."""
    try:
        rename(src_root, src_rel, dst_root, dst_rel)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy(src_root, src_rel, dst_root, dst_rel)
        remove(src_root, src_rel)


def copy(
    src_root: Path, src_rel: str, dst_root: Path, dst_rel: str, *, replace: bool = True, in_place: bool = False
) -> None:
    """Copy a regular file's bytes and times to a temp name beside the target, fsync, rename into place. The
    source is opened with O_NOFOLLOW (a symlink is refused); without `replace` an existing target stays. With
    `in_place` the copy is written under its own name (`write_in_place`)."""
    with parent(src_root, src_rel) as (sfd, sname):
        src = os.open(sname, _READ_FLAGS, dir_fd=sfd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file: not copied", src_rel)
        parts = split(dst_rel)
        dname = parts[-1]
        tmp = dname if in_place else temp_name(dname)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if in_place else os.O_EXCL)
        dfd, out = create_in(dst_root, parts[:-1], tmp, flags)
        try:
            try:
                try:
                    _copy_bytes(src, out, st.st_size)
                    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                    os.fsync(out)
                finally:
                    os.close(out)
                if not in_place and replace:
                    os.rename(tmp, dname, src_dir_fd=dfd, dst_dir_fd=dfd)
                elif not in_place:
                    _rename_noreplace(dfd, tmp, dfd, dname)
            except BaseException:
                if not in_place:
                    _discard_at(dfd, tmp, dst_root, dst_rel)
                raise
            with contextlib.suppress(OSError):
                os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(src)


def write_in_place(root: Path, rel_path: str, data: bytes) -> None:
    """Write a file under its final name, fsync'ed, without a temp name and rename: for files bound for a share that
    does not support renaming a file once created (an Azure Stack Edge cloud share uploads it under the name it was
    created with; its documented upload caveats). A reader may see it while it is written."""
    parts = split(rel_path)
    dfd, out = create_in(
        root, parts[:-1], parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(dfd)


def remove(root: Path, rel_path: str) -> None:
    """Unlink the entry (a symlink itself, never its target); a missing one is fine."""
    with parent(root, rel_path) as (fd, name), contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)


def prune_empty(root: Path, rel_dir: str, *, keep_top: int = 0) -> None:
    """Remove `rel_dir` and its parents below `root` while they are empty (never `root` itself, nor the first
    `keep_top` folders of the path). A writer that was about to create a file in one of them retries once
    (`create_in`)."""
    if not rel_dir:
        return
    parts = split(rel_dir)
    while len(parts) > keep_top:
        try:
            with parent(root, "/".join(parts)) as (fd, name):
                os.rmdir(name, dir_fd=fd)
        except OSError:
            return
        parts.pop()


def create_in(root: Path, folder_parts: Sequence[str], name: str, flags: int) -> tuple[int, int]:
    """(folder fd, file fd) of a new file `name` in `root/folder_parts...`, its folders made and walked without
    following a symlink. The folder may be removed by the output retention between its opening and the file's
    creation (an emptied folder): then it is made again and the creation tried once more."""
    for last_try in (False, True):
        fd = open_dir(root, folder_parts, create=True)
        try:
            return fd, os.open(name, flags, 0o644, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            if last_try:
                raise
        except BaseException:
            os.close(fd)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _copy_bytes(src: int, out: int, size: int) -> None:
    offset = 0
    try:
        while True:
            sent = os.sendfile(out, src, offset, _COPY_CHUNK)
            if sent == 0:
                return
            offset += sent
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
            raise
    while chunk := os.read(src, _COPY_CHUNK):  # a file system sendfile cannot read from
        os.write(out, chunk)


def _discard_at(fd: int, name: str, root: Path, rel_path: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError:
        discard((root / rel_path).with_name(name))  # the share is away: removed when it is back


def _load_renameat2() -> ctypes._NamedFuncPointer | None:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


_RENAMEAT2 = _load_renameat2()


def _rename_noreplace(sfd: int, sname: str, dfd: int, dname: str) -> None:
    """renameat2(RENAME_NOREPLACE); where the file system cannot (FUSE, old kernels) a check, then a rename."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(sfd, os.fsencode(sname), dfd, os.fsencode(dname), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dname)
    try:
        os.stat(dname, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dname)
