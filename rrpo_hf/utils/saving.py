"""Saves that are whole, shareable and never destroy what they did not write.

Three things go wrong when files are written straight into place:

* A process killed during a model save leaves a mix -- the new ``config.json`` beside the old weights -- that loads
  without error, or, in an empty folder, a half-written temporary file the size of the weights.
* safetensors >= 0.8 writes through a temporary file that is created with mode 0600 and renamed into place
  (safetensors issue #782), and so does ``tempfile``: the saved model is unreadable by other users whatever the umask.
* Replacing a folder wholesale deletes files a user keeps there.

So single files go through :func:`atomic_write` (temporary file beside the target, mode from the umask, fsync,
rename), and a model folder through :func:`save_folder_atomically`: everything is written into a hidden staging
folder inside the target (same filesystem, so renames are atomic), then a journal listing the moves is committed with
one atomic write, and the files are renamed into place. A kill before the commit leaves the old model (the staging
folder is removed by the next save or load); a kill after it is rolled forward by :func:`recover_interrupted_save`,
which the project's ``from_pretrained`` and ``save_pretrained`` call first. Either way the folder holds the old model
or the new one, complete. Files the save did not write are never touched, except the stale model files of an earlier
save (an old weight shard the new save does not replace), which would otherwise mix with the new model.

No torch or transformers import here: this module is the lowest layer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


STAGING_PREFIX = ".rrpo-staging-"
JOURNAL_NAME = ".rrpo-save-journal.json"

#: Files of a transformers model save. On commit, those of an earlier save that the new one did not write are removed
#: (e.g. `model-00002-of-00002.safetensors` when the new model fits in one `model.safetensors`).
MODEL_FILE_PATTERN = re.compile(
    r"(config\.json|generation_config\.json"
    r"|(model|pytorch_model)(\.[\w-]+)?(-\d{5}-of-\d{5})?\.(safetensors|bin)"
    r"|(model|pytorch_model)(\.[\w-]+)?\.(safetensors|bin)\.index\.json)"
)


# ----------------------------------------------------------------------------------------------------- file modes
def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (the umask(0) dance races other threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def apply_default_mode(paths: Iterable[str | os.PathLike]) -> None:
    """Give existing files the umask's mode: for files written by code that creates them 0600 (PEFT's adapter
    weights go through safetensors) and that cannot be routed through :func:`atomic_write`."""
    mode = default_file_mode()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, mode)


def _mode_for(target: Path) -> int:
    # Overwriting keeps the target's permissions, as writing into it would; a new file gets the umask's.
    try:
        return os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        return default_file_mode()


def _fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # some filesystems refuse to open directories; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------- single files
def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)``, then move the file to ``path`` in one rename; returns ``path``.

    The temporary file is hidden beside ``path`` and removed if ``write`` raises, so a crash leaves the previous file
    (or none), never half of one. The result has the permissions of the file it replaces, else ``0o666 & ~umask``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(temporary)
        os.chmod(temporary, _mode_for(path))
        _fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding=encoding))


# ------------------------------------------------------------------------------------------------ model folders
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-\w+")


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _is_stale_staging(name: str) -> bool:
    # Only a folder of a dead process on this host is provably abandoned; one from another host (a shared
    # filesystem) may belong to a save in progress there.
    match = _STAGING_NAME.fullmatch(name)
    return bool(match) and match["host"] == _host_tag() and not _process_is_alive(int(match["pid"]))


def _read_journal(folder: Path) -> dict | None:
    try:
        return json.loads((folder / JOURNAL_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _roll_forward(folder: Path, journal: dict) -> None:
    """Finish a committed save: move the staged files into place, drop the stale ones, clear the journal.

    Idempotent, so a kill during it (or two processes doing it at once) is harmless.
    """
    staging = folder / journal["staging"]
    for relative in journal["files"]:
        source = staging / relative
        if source.exists():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                os.replace(source, folder / relative)
    for relative in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(folder / relative)
        # A subfolder the removal emptied (an old dataset split) goes too; one holding anything else stays.
        parent = (folder / relative).parent
        while parent != folder:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    _fsync_path(folder, directory=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(folder / JOURNAL_NAME)
    shutil.rmtree(staging, ignore_errors=True)


def recover_interrupted_save(folder: str | os.PathLike) -> bool:
    """Complete a save that was killed after its commit, and remove staging folders of dead processes.

    Returns True when a save was rolled forward. A no-op on a folder no interrupted save touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    journal = _read_journal(folder)
    if journal is not None:
        _roll_forward(folder, journal)
    for entry in folder.iterdir():
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and _is_stale_staging(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    return journal is not None


def _staged_files(staging: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), staging) for root, _, names in os.walk(staging) for name in names
    )


def save_folder_atomically(
    folder: str | os.PathLike,
    write: Callable[[Path], object],
    replaces: Callable[[str], bool] | re.Pattern | None = MODEL_FILE_PATTERN,
) -> list[str]:
    """Call ``write(staging_folder)``, then switch ``folder`` to what it wrote in one commit; returns the names.

    ``replaces`` says which files of ``folder`` that ``write`` did not produce belong to an earlier save of the same
    kind and go away on commit (a pattern matched on the whole relative path, a predicate of it, or None for none);
    every other file in ``folder`` and its subfolders is left alone. If ``write`` raises, the staging folder is
    removed and ``folder`` is as before.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(folder)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host_tag()}-{os.getpid()}-", dir=folder))
    committed = False
    try:
        write(staging)
        files = _staged_files(staging)
        mode = default_file_mode()
        for relative in files:
            # Whatever wrote them (safetensors' 0600 temporary files included), saved files get the umask's mode.
            os.chmod(staging / relative, mode)
            _fsync_path(staging / relative)
        _fsync_path(staging, directory=True)
        if isinstance(replaces, re.Pattern):
            pattern = replaces
            replaces = lambda name: pattern.fullmatch(name) is not None  # noqa: E731
        written = set(files)
        stale = [
            name for name in _existing_files(folder) if name not in written and replaces is not None and replaces(name)
        ]
        journal = {"staging": staging.name, "files": files, "remove": stale}
        # Written inside the staging folder and renamed: a kill before the rename leaves nothing in `folder`.
        pending = staging / JOURNAL_NAME
        pending.write_text(json.dumps(journal, indent=1), encoding="utf-8")
        _fsync_path(pending)
        os.replace(pending, folder / JOURNAL_NAME)  # the commit point
        _fsync_path(folder, directory=True)
        committed = True
        _roll_forward(folder, journal)
        return files
    finally:
        if not committed:
            shutil.rmtree(staging, ignore_errors=True)


def _existing_files(folder: Path) -> Iterable[str]:
    """Relative paths of the files in ``folder`` and its subfolders, except the save's own staging and journal."""
    for root, directories, names in os.walk(folder):
        if root == os.fspath(folder):
            directories[:] = [name for name in directories if not name.startswith(STAGING_PREFIX)]
            names = [name for name in names if name != JOURNAL_NAME]
        for name in names:
            yield os.path.relpath(os.path.join(root, name), folder)


# ----------------------------------------------------------------------------------------------- loading errors
class IncompleteCheckpointError(OSError):
    """A weights file that cannot be read: cut short by an interrupted save, copy or download."""


def _unreadable_safetensors(folder: Path) -> Path | None:
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception:  # noqa: BLE001 -- any failure to open the header is what we are looking for
            return path
    return None


def incomplete_checkpoint_error(source: str | os.PathLike | None, error: BaseException) -> IncompleteCheckpointError:
    """The error to raise for a safetensors failure while loading from ``source``: which file, and what to do."""
    folder = Path(source) if source is not None and os.path.isdir(source) else None
    broken = _unreadable_safetensors(folder) if folder is not None else None
    what = str(broken) if broken is not None else f"A weights file of {source!r}"
    size = f" ({broken.stat().st_size} bytes)" if broken is not None else ""
    return IncompleteCheckpointError(
        f"{what}{size} is incomplete or corrupt ({error}): it was cut short, e.g. by an interrupted save, copy or "
        "download. Save the model again, re-download it (`force_download=True` for a Hub model), or resume the run "
        "from its last complete checkpoint-N folder."
    )


class ConsistentSaveMixin:
    """For `PreTrainedModel` subclasses (put it first in the bases): `save_pretrained` switches the folder from the
    old model to the new one in one commit, with umask-based file modes, and `from_pretrained` completes an
    interrupted save first and names the file when the weights are truncated.

    Subclasses add files to a save by overriding `_write_extra_files(staging_folder)`; they land in the same commit.
    """

    def _write_extra_files(self, staging_folder: Path) -> None:
        """Hook: write more files next to config and weights before the commit."""

    def save_pretrained(self, save_directory, is_main_process: bool = True, *, push_to_hub: bool = False, **kwargs):
        parent = super()
        if kwargs.get("distributed_checkpoint") or os.path.isfile(save_directory):
            # DCP writes from every rank; a file path is refused by transformers' own message.
            return parent.save_pretrained(
                save_directory, is_main_process=is_main_process, push_to_hub=push_to_hub, **kwargs
            )
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        saves_here = self.should_save_on_this_rank(is_main_process)
        if saves_here:

            def write(staging: Path) -> None:
                parent.save_pretrained(staging, is_main_process=is_main_process, push_to_hub=False, **kwargs)
                self._write_extra_files(staging)

            save_folder_atomically(save_directory, write)
        else:
            # Other ranks still take part in the collective gathers of a sharded model; they write nothing.
            parent.save_pretrained(save_directory, is_main_process=is_main_process, push_to_hub=False, **kwargs)
        if push_to_hub and saves_here:
            # Pushed after the commit, from a fresh save of the same weights (`push_to_hub` saves to a temp folder).
            repo_id = hub_kwargs.pop("repo_id", os.fspath(save_directory).rstrip(os.sep).split(os.sep)[-1])
            self.push_to_hub(
                repo_id, token=kwargs.get("token"), max_shard_size=kwargs.get("max_shard_size", "50GB"), **hub_kwargs
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from safetensors import SafetensorError

        source = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        if source is not None and os.path.isdir(source):
            recover_interrupted_save(source)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise incomplete_checkpoint_error(source, error) from error


_HUB_KWARGS = ("repo_id", "commit_message", "commit_description", "create_pr", "private", "revision", "tags")


__all__ = [
    "ConsistentSaveMixin",
    "apply_default_mode",
    "IncompleteCheckpointError",
    "JOURNAL_NAME",
    "MODEL_FILE_PATTERN",
    "STAGING_PREFIX",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "default_file_mode",
    "incomplete_checkpoint_error",
    "recover_interrupted_save",
    "save_folder_atomically",
]
