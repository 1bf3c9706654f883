"""Where a command may write, and what ``--overwrite`` may remove: one rule for every command.

A user's plate is irreplaceable, so every command that writes (``simulate``,
``ingest``, ``run``, ``train``, ``report``, ``demo``) asks :func:`prepare_output`
first. It refuses, in one line that says what to do:

- an output that is, contains or lies inside one of the command's inputs
  (symlinks resolved), whatever the flags;
- an output under a regular file, or in a folder this process cannot write;
- an existing output, unless ``overwrite`` (or ``resume``) is asked for; and
  ``overwrite`` removes only an empty folder or an output that this project
  wrote *of the same kind* (recognised by its own metadata), never a folder
  holding anything else.

Outputs are recognised by what only this project writes into them:

========== ==========================================================================
kind       recognised by
========== ==========================================================================
results    a zarr group whose attributes say ``format: plate_refocus.results/...``
plate      a zarr group whose ``plate_refocus`` metadata says the same writer made it
           (``simulate`` replaces only a simulated plate, ``ingest`` only an ingested one)
model      a ``.keras`` file with the model metadata ``.json`` of ``plate-refocus train`` beside it
report     a folder holding the marker file :data:`REPORT_MARKER`
demo       a folder holding the marker file :data:`DEMO_MARKER`
========== ==========================================================================
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .errors import OutputExistsError, OutputLocationError

__all__ = [
    "OutputKind",
    "REPORT_MARKER",
    "DEMO_MARKER",
    "RESULTS_FORMAT_PREFIX",
    "prepare_output",
    "check_output_location",
    "is_ours",
    "remove_ours",
]

log = logging.getLogger(__name__)

OutputKind = Literal["results", "plate", "model", "report", "demo"]
_KINDS = ("results", "plate", "model", "report", "demo")

#: Marker file of a report folder and of a demo folder.
REPORT_MARKER = ".plate-refocus-report"
DEMO_MARKER = ".plate-refocus-demo"
#: Every results store's ``format`` attribute starts with this.
RESULTS_FORMAT_PREFIX = "plate_refocus.results/"
#: Plates this project wrote say which command wrote them under ``plate_refocus.written_by``.
PLATE_WRITERS = ("simulate", "ingest", "write_plate", "refocused_plate")


def _zarr_attributes(path: Path) -> dict:
    """The root group's attributes of a zarr v3 or v2 store, ``{}`` if it is not one."""
    for name in ("zarr.json", ".zattrs"):
        meta = path / name
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                return {}
            if name == "zarr.json":
                if data.get("node_type") != "group":
                    return {}
                data = data.get("attributes") or {}
            return data if isinstance(data, dict) else {}
    return {}


def is_ours(path: str | os.PathLike, kind: OutputKind, *, writer: str | None = None) -> bool:
    """Whether ``path`` is an output of ``kind`` that this project wrote (so it may be replaced).

    For ``kind="plate"``, ``writer`` (one of :data:`PLATE_WRITERS`) must be the
    command that wrote it: a simulated plate is never replaced by an ingest.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS!r}, got {kind!r}")
    if kind == "plate" and writer not in PLATE_WRITERS:
        raise ValueError(f"writer must be one of {PLATE_WRITERS!r} for plates, got {writer!r}")
    path = Path(path)
    if kind == "model":
        meta = path.with_suffix(".json")
        if path.suffix != ".keras" or not path.is_file() or not meta.is_file():
            return False
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return False
        # The keys plate_refocus.unet.ModelInfo.to_dict always writes, or an RL refiner's format.
        return isinstance(data, dict) and (data.get("format") == "plate-refocus rl-refiner" or all(
            key in data for key in ("format_version", "name", "config", "optics", "depths_um")
        ))
    if not path.is_dir() or path.is_symlink():
        return False
    if kind == "report":
        return (path / REPORT_MARKER).is_file()
    if kind == "demo":
        return (path / DEMO_MARKER).is_file()
    attrs = _zarr_attributes(path)
    if kind == "results":
        return str(attrs.get("format", "")).startswith(RESULTS_FORMAT_PREFIX)
    ours = attrs.get("plate_refocus")
    return isinstance(ours, dict) and ours.get("written_by") == writer


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _relation(out: Path, other: Path) -> str | None:
    """How the resolved output relates to a resolved input: "is", "inside", "contains" or None."""
    if out == other:
        return "is"
    if other in out.parents:
        return "inside"
    if out in other.parents:
        return "contains"
    return None


def check_output_location(
    out: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (), what: str = "output"
) -> Path:
    """Refuse an output that overlaps an input or cannot be created; returns it as a Path.

    Checks, without writing anything that stays: the output is not one of
    ``inputs``, not inside one and does not contain one (symlinks resolved);
    its nearest existing ancestor is a folder this process can create
    entries in (probed with a temporary folder, which also catches read-only
    file systems where permission bits say nothing, e.g. for root).

    Raises
    ------
    OutputLocationError
        With the fix in the message.
    """
    if not isinstance(out, (str, os.PathLike)) or "://" in os.fspath(out):
        raise TypeError(f"{what} must be a local path, got {out!r}")
    path = Path(out)
    resolved = path.resolve()
    for given in inputs:
        if given is None or "://" in os.fspath(given):
            continue
        other = Path(given).resolve()
        relation = _relation(resolved, other)
        if relation is not None:
            text = {"is": "is", "inside": "is inside", "contains": "contains"}[relation]
            raise OutputLocationError(
                f"the {what} {os.fspath(out)!r} {text} the input {os.fspath(given)!r}; nothing was "
                "written: choose a path outside the input (the input is never written to or "
                "removed)"
            )
    ancestor = resolved
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor != resolved and not ancestor.is_dir():
        raise OutputLocationError(
            f"cannot create the {what} {os.fspath(out)!r}: {os.fspath(ancestor)!r} is a file, not a "
            "folder; choose a path in a folder"
        )
    if ancestor == resolved:
        ancestor = resolved.parent
    try:
        probe = tempfile.mkdtemp(prefix=".plate-refocus-probe-", dir=ancestor)
    except OSError as error:
        raise OutputLocationError(
            f"cannot create the {what} {os.fspath(out)!r}: the folder {os.fspath(ancestor)!r} is not "
            f"writable here ({error.strerror or error}); choose a path in a folder you can write"
        ) from None
    os.rmdir(probe)
    return path


def remove_ours(path: str | os.PathLike, kind: OutputKind, *, writer: str | None = None) -> None:
    """Remove an output only if it is empty or :func:`is_ours` of ``kind``; refuse otherwise."""
    path = Path(path)
    if path.is_symlink():
        raise OutputExistsError(
            f"refusing to replace {os.fspath(path)!r}: it is a symbolic link; remove the link "
            "yourself or choose another path"
        )
    if _is_empty_dir(path):
        path.rmdir()
        return
    if not is_ours(path, kind, writer=writer):
        what = {
            "results": "a results store of plate-refocus run",
            "plate": f"a plate written by plate-refocus {writer}",
            "model": "a model written by plate-refocus train (.keras with its .json)",
            "report": "a report folder of plate-refocus report",
            "demo": "a folder made by plate-refocus demo",
        }[kind]
        raise OutputExistsError(
            f"refusing to overwrite {os.fspath(path)!r}: it is not {what}, so --overwrite will not "
            "remove it; nothing was changed: remove it yourself or choose another path"
        )
    log.info("removing the previous %s at %s (--overwrite)", kind, path)
    if kind == "model":
        path.unlink()
        path.with_suffix(".json").unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def prepare_output(
    out: str | os.PathLike,
    *,
    kind: OutputKind,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    resume: bool = False,
    remove: bool = True,
    writer: str | None = None,
) -> Path:
    """Check an output path for a command and, with ``overwrite``, remove what may be removed.

    Parameters
    ----------
    out : path
        The output the command is about to write.
    kind : {"results", "plate", "model", "report", "demo"}
        What the command writes; ``overwrite`` removes only an output of this kind.
    inputs : sequence of path
        The command's inputs: the output may not be, contain or lie inside any of them.
    overwrite : bool
        Replace an existing output (only if empty or ours, see :func:`is_ours`).
    resume : bool
        An existing output is kept for the caller to resume (the caller checks it).
    remove : bool
        With ``overwrite``, remove the old output now (``False``: only check that it
        may be removed, e.g. to replace it later by a rename).
    writer : str, optional
        For plates: the command writing it (see :func:`is_ours`).

    Returns
    -------
    Path
        ``out``; it does not exist on return unless ``resume`` found it (or
        ``remove=False``).

    Raises
    ------
    OutputLocationError
        The output overlaps an input, or cannot be created where it is.
    OutputExistsError
        It exists and neither ``overwrite`` nor ``resume`` was asked for, or
        ``overwrite`` was asked for but it is not ours to remove.
    """
    if overwrite and resume:
        raise ValueError("pass overwrite=True or resume=True, not both")
    path = check_output_location(out, inputs=inputs, what=kind if kind != "results" else "output")
    if not (path.exists() or path.is_symlink()):
        return path
    if resume:
        return path
    if not overwrite:
        hint = "--resume to finish it or --overwrite" if kind == "results" else "--overwrite"
        raise OutputExistsError(
            f"{os.fspath(path)!r} already exists; nothing was changed: pass {hint} to replace it, "
            "or choose another path"
        )
    if remove:
        remove_ours(path, kind, writer=writer)
    elif not (_is_empty_dir(path) or is_ours(path, kind, writer=writer)):
        remove_ours(path, kind, writer=writer)  # raises with the reason
    return path
