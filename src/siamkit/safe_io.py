"""Writing files so that nothing is ever half-written, and reading them back safely.

Every checkpoint, export, classifier, cache and results file siamkit writes goes through
:func:`atomic_write`: the bytes go to a temporary file in the destination's own folder, are
flushed and synced to disk, and the temporary file is renamed over the destination. A rename
within one folder is atomic, whatever ``TMPDIR`` is (a temporary file on another filesystem,
``/tmp`` on a tmpfs say, would be copied, and a kill during the copy leaves a truncated file). A
kill leaves either the old file or the new one, never a mixture; a full disk leaves the old
file and an error that says so.

:func:`safe_torch_load` reads checkpoints with ``torch.load(weights_only=True)``: tensors,
numbers, strings and containers only, so a crafted file cannot run code when it is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from siamkit.errors import DiskFullError, OutputError, SiamkitError

__all__ = [
    "DiskFullError",
    "OutputError",
    "atomic_save_with",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_apart",
    "check_folder_writable",
    "check_new_file",
    "check_writable",
    "process_alive",
    "read_user_text",
    "real_path",
    "remove_stale_temporaries",
    "safe_torch_load",
    "staged_folder",
]

#: Prefix of the temporary files of :func:`atomic_write` (left behind only by a killed write
#: of an earlier run; :func:`remove_stale_temporaries` clears them).
TEMP_PREFIX = ".siamkit-tmp-"


def check_writable(path: Path, what: str) -> None:
    """Raise an :class:`OutputError` naming the fix unless a file can be written at ``path``.

    Args:
        path: The file to write.
        what: What it is, for the message ("export", "embeddings").
    """
    if path.is_dir():
        raise OutputError(
            f"{what} output {str(path)!r} is a folder; pass a file name, e.g. {path}/model.out"
        )
    _check_place(f"{what} output {str(path)!r}", path, path.parents)


def _check_place(label: str, path: Path, candidates: Iterable[Path]) -> None:
    """Refuse a dangling link at ``path``, or a first existing ``candidate`` one cannot write in.

    ``label`` names the output in messages; ``candidates`` are the folders that may hold it,
    nearest first.

    Raises:
        OutputError: Naming the fix.
    """
    if path.is_symlink() and not path.exists():
        raise OutputError(
            f"{label} is a symbolic link that leads nowhere (or back to itself); remove it or "
            "choose another path"
        )
    for parent in candidates:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(
                    f"{label} lies under {str(parent)!r}, which is a file; choose a path in a "
                    "folder"
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(
                    f"{label}: no permission to write in {str(parent)!r}; choose a folder you "
                    "can write to"
                )
            return


def real_path(path: Path) -> Path:
    """``path`` made absolute with its links followed; where a link loops, made absolute only.

    (``Path.resolve`` raises ``RuntimeError`` on a link loop before Python 3.13.)
    """
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def check_new_file(path: Path, what: str, overwrite: bool) -> None:
    """Refuse an output file that exists (a file, a folder or a link) unless ``overwrite``.

    Then :func:`check_writable`. A command replaces a file only when ``--overwrite`` says so.

    Raises:
        OutputError: Naming the fix.
    """
    if os.path.lexists(path) and not path.is_dir() and not overwrite:
        raise OutputError(
            f"{what} output {str(path)!r} exists already; choose another file name or pass "
            "--overwrite to replace it"
        )
    check_writable(path, what)


def check_folder_writable(folder: Path, what: str) -> None:
    """Raise an :class:`OutputError` naming the fix unless ``folder`` can be made and written.

    Args:
        folder: The output folder (it may not exist yet).
        what: What it is, for the message ("run folder").
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"{what} {str(folder)!r} is a file; pass a folder for --output (it is made if missing)"
        )
    _check_place(f"{what} {str(folder)!r}", folder, (folder, *folder.parents))


def check_apart(output: Path, flag: str, inputs: dict[str, Path]) -> None:
    """Refuse an output that is one of the command's inputs, lies inside one, or holds one.

    A command writes (and with ``--overwrite`` replaces) its output; were the output an input or
    around one, that would destroy the input. Checked before anything is read or written.

    Args:
        output: The output path.
        flag: Its flag, for the message (``--output``).
        inputs: Each input's flag and path (``{"--data": Path("photos")}``).

    Raises:
        OutputError: The output and an input are the same, or one holds the other.
    """
    out = real_path(output)
    for name, path in inputs.items():
        source = real_path(path)
        if out == source or source in out.parents or out in source.parents:
            where = "is" if out == source else ("lies inside" if source in out.parents else "holds")
            raise OutputError(
                f"{flag} {str(output)!r} {where} the input {name} {str(path)!r}; writing there "
                f"would destroy the input: choose an {flag} outside {str(path)!r}"
            )


#: Prefix of the folders :func:`staged_folder` builds an output in (beside the output).
STAGING_PREFIX = TEMP_PREFIX + "staged-"


@contextlib.contextmanager
def staged_folder(dest: Path, what: str) -> Iterator[Path]:
    """Build a folder beside ``dest``; it replaces ``dest`` only when the block succeeds.

    The new folder is ``.siamkit-tmp-staged-<pid>-<name>`` in ``dest``'s parent (the same
    filesystem, so the final rename is atomic). When the block ends normally, an existing
    ``dest`` is moved aside, the new folder renamed to ``dest``, and the old one removed; so a
    kill leaves the old output or the new one, never a mixture. On any error, Ctrl-C included,
    the new folder is removed and ``dest`` is as it was. Staged folders of killed processes are
    removed when the next one starts.

    Args:
        dest: The output folder (replaced only if the caller has checked it may be).
        what: What it is, for messages.

    Yields:
        The folder to build the output in.

    Raises:
        DiskFullError: The disk filled up.
        OutputError: The parent of ``dest`` cannot be written.
    """
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(parent, dest.name)
        stage = parent / f"{STAGING_PREFIX}{os.getpid()}-{dest.name}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    except OSError as err:
        raise _write_error(err, dest, what) from None
    old = parent / f"{STAGING_PREFIX}{os.getpid()}-old-{dest.name}"
    try:
        yield stage
        if dest.exists():
            os.replace(dest, old)
        os.replace(stage, dest)
        _sync_folder(parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        if old.exists() and not dest.exists():  # stopped between the two renames
            os.replace(old, dest)
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(err, OSError):
            raise _write_error(err, dest, what) from None
        raise


def _remove_dead_staging(parent: Path, name: str) -> None:
    """Clear what processes no longer alive left beside ``name``.

    A staged folder is removed; an earlier output moved aside (``-old-``) is put back when a
    kill came between the two renames and left no output, else removed.
    """
    for stage in parent.glob(f"{STAGING_PREFIX}*-{name}"):
        pid, _, rest = stage.name[len(STAGING_PREFIX) :].partition("-")
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        dest = parent / name
        if rest == f"old-{name}" and not os.path.lexists(dest):
            os.replace(stage, dest)
        else:
            shutil.rmtree(stage, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with that id is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _replacing(dest: Path, what: str) -> Iterator[tuple[int, str]]:
    """A temporary file beside ``dest`` (descriptor, name) that replaces it when the block ends.

    The block writes the file and flushes it to disk; then it is renamed over ``dest`` and the
    folder synced. On any error the temporary file is removed and ``dest`` is left as it was;
    an ``OSError`` becomes a :class:`DiskFullError` or :class:`OutputError`.
    """
    check_writable(dest, what)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(dest)
    try:
        yield fd, tmp
        os.replace(tmp, dest)
        _sync_folder(dest.parent)
    except OSError as err:
        _remove(tmp)
        raise _write_error(err, dest, what) from None
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, what: str = "file") -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Args:
        path: The destination.
        what: What it is, for messages.

    Yields:
        A binary file object.

    Raises:
        DiskFullError: The disk filled up (``path`` keeps its earlier content, if any).
        OutputError: ``path`` cannot be written.
    """
    with _replacing(Path(path), what) as (fd, _), os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _write_error(err: OSError, dest: Path, what: str) -> SiamkitError:
    """The error to raise for a failed write of ``dest``: a full disk or an unwritable output."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"no space left on the disk of {str(dest)!r} while writing the {what}; free some "
            "space (the files written before are intact) and run again"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(
            f"cannot write the {what} {str(dest)!r}: no permission ({err.strerror}); choose a "
            "folder you can write to"
        )
    return OutputError(f"cannot write the {what} {str(dest)!r}: {err.strerror}")


def atomic_write_bytes(path: str | Path, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, what) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(), what)


def atomic_torch_save(obj: Any, path: str | Path, what: str = "checkpoint") -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch  # here, not at the top: reading a recipe (this module) needs no torch

    with atomic_write(path, what) as f:
        torch.save(obj, f)
    return Path(path)


def atomic_save_with(write: Callable[[str], None], path: str | Path, what: str) -> Path:
    """Atomically write ``path`` with a library function that takes a file name.

    For safetensors or ONNX writers: ``write`` writes a temporary file beside ``path``, which
    then replaces it.
    """
    dest = Path(path)
    with _replacing(dest, what) as (fd, tmp):
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return dest


def read_user_text(path: Path, what: str, error: type[SiamkitError], fix: str) -> str:
    """The UTF-8 text of a file the user names (a recipe, an experiment file).

    Raises:
        error: The file is not UTF-8 text (a binary file, another encoding), with ``fix``.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {str(path)!r} is not a text file (byte {err.start} is not UTF-8); {fix}"
        ) from None


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files killed writes left in ``folder``; returns how many."""
    if not folder.is_dir():
        return 0
    stale = list(folder.glob(TEMP_PREFIX + "*"))
    for f in stale:
        _remove(str(f))
    return len(stale)


def safe_torch_load(source: str | Path | bytes) -> Any:
    """``torch.load(weights_only=True)`` on the CPU: no code runs, whatever the file holds.

    Raises:
        pickle.UnpicklingError: The file holds objects other than tensors, numbers, strings
            and containers (a crafted or foreign pickle).
    """
    import torch

    src = io.BytesIO(source) if isinstance(source, bytes) else source
    return torch.load(src, map_location="cpu", weights_only=True)


def _temporary(dest: Path) -> tuple[int, str]:
    """A new temporary file beside ``dest``: ``.siamkit-tmp-<random>-<name>.tmp``.

    It gets the permissions a plain ``open`` would give (``mkstemp`` makes it private).
    """
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=f"-{dest.name}.tmp", dir=dest.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
