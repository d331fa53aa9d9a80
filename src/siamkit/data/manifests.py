"""Manifests: an image collection listed in a file, one row per image.

``--data list.csv`` (or ``.jsonl``, ``.parquet``) names every image's file and, optionally, its
class and its split. A manifest gives the same file lists (:class:`~siamkit.data.files.FileList`)
a folder gives, so every storage, ``siamkit pack`` and every command that reads data take it as
they take a folder (:func:`data_splits` is their common entry).

Columns (no others are accepted):
    ``path`` (required): the image file, absolute or relative to the manifest's folder.
    ``label`` (optional): the class name; integers are class names too (``3`` is class ``"3"``).
        Every row has one, or (under ``data.labels: auto``) none does and the data is
        unlabelled. ``data.labels: none`` ignores the column. Classes are sorted by name.
    ``split`` (optional): ``train`` or ``test`` on every row. Without it, labelled data has a
        stratified ``data.test_fraction`` held out (fixed seed, as a ``root/<class>/`` folder),
        and unlabelled data has no held-out split.

CSV (a header row naming the columns) is read with the standard ``csv`` module, JSON Lines one
object a line, Parquet through ``pyarrow`` where it is installed. Rows are read one at a time
and the paths are packed straight into a :class:`~siamkit.data.files.PathStore`, so a manifest
of millions of rows keeps no Python object per row. Files listed but missing are an error
before anything is decoded; files that exist but cannot be decoded are counted later, as for
folders.
"""

from __future__ import annotations

import csv
import json
import os
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from siamkit.data.files import (
    MANIFEST_EXTENSIONS,
    FileList,
    PathStore,
    folder_splits,
    stratified_split,
)
from siamkit.errors import DataError

#: The columns a manifest may have (``path`` is required).
COLUMNS = ("path", "label", "split")
_ACCEPTED = frozenset(COLUMNS)
#: The values of the ``split`` column.
SPLITS = ("train", "test")
#: Where the labels of a labelled manifest come from, as :meth:`FileList.describe` prints it.
LABEL_SOURCE = "manifest column label"
#: Missing files named in the error (all are counted).
NAMED_MISSING = 5
#: Parquet rows converted to Python at a time: bounded memory on any manifest size.
_PARQUET_BATCH = 65536

#: One row: its position for messages (a line of a CSV or JSON Lines file, a Parquet row) and
#: its values by column name.
_Row = tuple[int, Mapping[str, object]]


def is_manifest(path: str | Path) -> bool:
    """Whether ``path`` names a manifest: not a folder, ending ``.csv``, ``.jsonl`` or ``.parquet``.

    A missing file counts, so that reading it names the missing manifest.
    """
    p = Path(path)
    return p.name.lower().endswith(MANIFEST_EXTENSIONS) and not p.is_dir()


def data_splits(
    root: Path,
    test_fraction: float,
    labels: str = "auto",
    labels_file: str | Path | None = None,
) -> tuple[FileList, FileList | None]:
    """Training and held-out files of a manifest or an image folder, whichever ``root`` is.

    Args:
        root: A manifest (:func:`is_manifest`) or an image folder.
        test_fraction: Share held out from labelled data without a split of its own.
        labels: ``data.labels``.
        labels_file: ``data.labels_file`` (folders only).

    Raises:
        DataError: As :func:`manifest_splits` or :func:`~siamkit.data.files.folder_splits`.
    """
    if is_manifest(root):
        return manifest_splits(root, test_fraction, labels, labels_file)
    return folder_splits(root, test_fraction, labels, labels_file)


def manifest_splits(
    path: str | Path,
    test_fraction: float,
    labels: str = "auto",
    labels_file: str | Path | None = None,
) -> tuple[FileList, FileList | None]:
    """Training files and, where the manifest allows, held-out files (module docstring).

    Args:
        path: The manifest.
        test_fraction: Share held out from labelled rows when there is no ``split`` column.
        labels: ``auto`` (the ``label`` column where it has values) or ``none`` (ignore it).
        labels_file: Must be ``None``: a manifest's labels are its ``label`` column.

    Returns:
        The training split and the held-out split (``None`` for unlabelled data without a
        ``split`` column, or a ``split`` column without ``test`` rows).

    Raises:
        DataError: An unreadable manifest, an unknown column, a row without a path or with a
            bad split, missing files, a label column with gaps, or test classes the training
            split lacks.
    """
    path = Path(path)
    _check_options(path, labels, labels_file)
    read = _Reader(path, with_labels=labels != "none")
    read.rows(_rows(path))
    full = read.file_list()
    if read.split is None:
        if full.labels is None:
            return full, None
        train_idx, test_idx = stratified_split(full.labels, test_fraction, seed=0)
        return full.subset(train_idx), full.subset(test_idx)
    train_idx = torch.from_numpy(np.flatnonzero(read.split == 1))
    test_idx = torch.from_numpy(np.flatnonzero(read.split == 2))
    if not len(train_idx):
        raise DataError(
            f"manifest {str(path)!r} has no row of split 'train'; mark the training images "
            "train (or drop the split column to hold out data.test_fraction)"
        )
    train, test = full.subset(train_idx), full.subset(test_idx) if len(test_idx) else None
    _check_test_classes(path, train, test)
    return train, test


def _check_options(path: Path, labels: str, labels_file: str | Path | None) -> None:
    """Refuse the label options that apply to folders only."""
    if labels_file is not None:
        raise DataError(
            f"data.labels_file labels image folders, but {str(path)!r} is a manifest: its labels "
            "are its label column; drop data.labels_file"
        )
    if labels not in ("auto", "none"):
        raise DataError(
            f"data.labels={labels} reads folders, but {str(path)!r} is a manifest: its labels "
            "are its label column; use data.labels=auto (or none to ignore the column)"
        )


class _Reader:
    """A manifest's rows, gathered into flat arrays as they are read.

    The encoded paths, one class code and one split code per row, and the first few missing
    files: no Python object per row is kept.
    """

    def __init__(self, manifest: Path, with_labels: bool) -> None:
        self.manifest, self.with_labels = manifest, with_labels
        # Relative paths are read from the manifest's folder wherever the run starts; made
        # absolute here, so DataLoader workers and the decode cache see the same files.
        self.base = str(manifest.parent.absolute())
        self.blob = bytearray()
        self.ends = array("q", [0])
        self.codes = array("q")  # index into self.names; -1 for a row without a label
        self.names: dict[str, int] = {}  # class name -> code, in the order first seen
        self.splits = bytearray()  # 0: no split given, 1: train, 2: test
        self.missing: list[str] = []
        self.n_missing = 0
        self.first_unlabelled = self.first_unsplit = 0  # the row's position; 0: none yet
        self.split: np.ndarray | None = None

    def rows(self, rows: Iterator[_Row]) -> None:
        """Read every row (module docstring), raising at the first bad one."""
        for where, row in rows:
            raw = self._text(row.get("path"), "path", where)
            if not raw:
                raise DataError(f"{self._at(where)} has no path; give every row its image file")
            # ``..`` is folded (as ``os.path.abspath`` would): messages and cache keys then
            # show each file under one name.
            full = raw if os.path.isabs(raw) else os.path.normpath(os.path.join(self.base, raw))
            if not os.path.isfile(full):
                self.n_missing += 1
                if len(self.missing) < NAMED_MISSING:
                    self.missing.append(full)
            self.blob += full.encode()
            self.ends.append(len(self.blob))
            if self.with_labels:
                name = self._text(row.get("label"), "label", where)
                if not name and not self.first_unlabelled:
                    self.first_unlabelled = where
                self.codes.append(self.names.setdefault(name, len(self.names)) if name else -1)
            split = self._text(row.get("split"), "split", where)
            if split and split not in SPLITS:
                raise DataError(
                    f"{self._at(where)} has split {split!r}; a split is 'train' or 'test'"
                )
            if not split and not self.first_unsplit:
                self.first_unsplit = where
            self.splits.append(SPLITS.index(split) + 1 if split else 0)

    def file_list(self) -> FileList:
        """Every row as one file list, labelled where the label column has values.

        Sets :attr:`split` (``(N,)`` 1 for train, 2 for test), or leaves it ``None`` where no
        row gives a split.
        """
        n, where = len(self.ends) - 1, str(self.manifest)
        if not n:
            raise DataError(f"manifest {where!r} lists no images; give it one row per image")
        if self.n_missing:
            raise DataError(
                f"{self.n_missing} of the {n} files manifest {where!r} lists do not exist (e.g. "
                f"{', '.join(repr(m) for m in self.missing)}); relative paths are read from the "
                "manifest's folder; fix the paths or remove those rows"
            )
        store = PathStore.from_encoded(self.blob, np.frombuffer(self.ends, dtype=np.int64))
        splits = np.frombuffer(self.splits, dtype=np.uint8)
        if splits.any():
            if self.first_unsplit:
                raise DataError(
                    f"{self._at(self.first_unsplit)} has no split, where other rows have one; "
                    "give every row 'train' or 'test'"
                )
            self.split = splits.copy()
        if not self.names:
            return FileList(where, store)
        if self.first_unlabelled:
            raise DataError(
                f"{self._at(self.first_unlabelled)} has no label, where other rows have one; "
                "give every row its class, or data.labels=none to read the manifest unlabelled"
            )
        classes = sorted(self.names)
        # Codes were handed out in the order classes were first seen; classes are sorted.
        order = np.empty(len(classes), dtype=np.int64)
        order[[self.names[c] for c in classes]] = np.arange(len(classes))
        labels = torch.from_numpy(order[np.frombuffer(self.codes, dtype=np.int64)])
        return FileList(where, store, labels, classes, LABEL_SOURCE)

    def _text(self, value: object, column: str, where: int) -> str:
        """A cell as text: strings stripped, integers as digits, an empty cell as ``""``."""
        if value is None:
            return ""
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise DataError(
            f"{self._at(where)}: {column} {value!r} is a {type(value).__name__}; give it as text"
        )

    def _at(self, where: int) -> str:
        """``manifest 'list.csv', line 3`` (a Parquet file's rows have no lines)."""
        unit = "row" if self.manifest.name.lower().endswith(".parquet") else "line"
        return f"manifest {str(self.manifest)!r}, {unit} {where}"


def _check_test_classes(path: Path, train: FileList, test: FileList | None) -> None:
    """Refuse test rows of classes that no training row has, naming them (as folders do).

    Labels index the classes of every row; where the test split has no class of its own, those
    are the training split's, so both splits keep the labels as read.
    """
    if test is None or train.labels is None or test.labels is None or train.classes is None:
        return
    names = train.classes
    unknown = sorted(
        {names[i] for i in test.labels.unique().tolist()}
        - {names[i] for i in train.labels.unique().tolist()}
    )
    if unknown:
        more = " ..." if len(unknown) > 5 else ""
        raise DataError(
            f"manifest {str(path)!r} has classes {unknown[:5]}{more} ({len(unknown)}) in its test "
            "split that the training split lacks; give the training split images of them, or "
            "remove those test rows"
        )


def _rows(path: Path) -> Iterator[_Row]:
    """The manifest's rows, by its file name's ending."""
    if not path.is_file():
        raise DataError(
            f"manifest {str(path)!r} does not exist; pass --data with a manifest file "
            f"({', '.join(MANIFEST_EXTENSIONS)}) or a folder of images"
        )
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _parquet_rows(path)
    return _jsonl_rows(path) if name.endswith(".jsonl") else _csv_rows(path)


def _check_columns(path: Path, names: list[str], need_path: bool = True) -> None:
    """Refuse unknown columns and (``need_path``) a manifest without a ``path`` column."""
    unknown = [n for n in names if n not in _ACCEPTED]
    if unknown:
        # pandas writes its index as a first column without a name unless told not to.
        index = " (an unnamed column is often pandas' index: to_csv(index=False))"
        raise DataError(
            f"manifest {str(path)!r} has unknown column(s) {', '.join(map(repr, unknown))}; the "
            f"columns are {', '.join(COLUMNS)} (path required)"
            f"{index if any(not n or n.startswith('Unnamed') for n in unknown) else ''}"
        )
    if need_path and "path" not in names:
        raise DataError(
            f"manifest {str(path)!r} has no 'path' column; name each image's file in a column "
            f"called path (columns: {', '.join(COLUMNS)})"
        )


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(
        f"manifest {str(path)!r} cannot be read ({type(err).__name__}: {err}); give a "
        "UTF-8 CSV with a header row, JSON Lines of objects, or Parquet"
    )


def _csv_rows(path: Path) -> Iterator[_Row]:
    """Rows of a CSV file with a header, one line at a time."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [h.strip() for h in next(reader, [])]
            _check_columns(path, header)
            width = len(header)
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue  # a blank line
                if len(fields) > width:
                    raise DataError(
                        f"manifest {str(path)!r}, line {reader.line_num} has {len(fields)} "
                        f"fields where the header names {width} columns ({', '.join(header)})"
                    )
                yield reader.line_num, dict(zip(header, fields, strict=False))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise _unreadable(path, err) from None


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    """Rows of a JSON Lines file: one object a line (blank lines skipped)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"manifest {str(path)!r}, line {number} is not JSON ({err.msg}); give "
                        'one object a line, e.g. {"path": "a.jpg", "label": "cat"}'
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"manifest {str(path)!r}, line {number} is a JSON "
                        f"{type(row).__name__}, not an object; give one object a line"
                    )
                if not row.keys() <= _ACCEPTED:
                    # A row without a path is named by the reader, with its line.
                    _check_columns(path, list(row), need_path=False)
                yield number, row
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(path, err) from None


def _parquet_rows(path: Path) -> Iterator[_Row]:
    """Rows of a Parquet file, a batch at a time, through ``pyarrow``.

    ``pyarrow`` is imported here: only Parquet manifests need it.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"manifest {str(path)!r} is Parquet, which needs pyarrow: pip install pyarrow "
            "(or write the manifest as .csv or .jsonl)"
        ) from None
    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow's errors (ArrowInvalid, ...) share no base with OSError
        raise _unreadable(path, err) from None
    names = list(table.schema_arrow.names)
    _check_columns(path, names)
    number = 0
    for batch in table.iter_batches(batch_size=_PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield number, row


__all__ = ["COLUMNS", "LABEL_SOURCE", "data_splits", "is_manifest", "manifest_splits"]
