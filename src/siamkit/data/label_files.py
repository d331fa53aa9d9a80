"""Label files: a file name and its class per line, for images that sit in no class folder.

The shape users meet (ImageNet's and Tiny ImageNet's validation sets): one line per image, its
file name (with or without the extension) first, its class second; further columns are ignored
(boxes, scores); tab-, comma- or space-separated; a header line allowed. The first column may
also be a path relative to the split's folder (needed where two images share a name). A second
column of ImageNet's ``PredictionString`` form (``n01751748 12 23 55 77 ...``: a class and four
box coordinates, repeated) gives its first token; any other second column is the class whole.
Files of those well-known names are found beside the images by themselves
(:data:`KNOWN_LABEL_FILES`); any other is ``data.labels_file``.
"""

from __future__ import annotations

from pathlib import Path

from siamkit.errors import DataError

#: Label files found beside a split's images without being named: Tiny ImageNet's (and the
#: other 64-px ImageNet subsets') ``val_annotations.txt``, six tab-separated columns, and
#: ImageNet's ``LOC_val_solution.csv``, ``ImageId,PredictionString``.
KNOWN_LABEL_FILES = ("val_annotations.txt", "LOC_val_solution.csv")

#: First fields of a header line (lower case): such a line names columns, not an image.
_HEADER_NAMES = {"file", "filename", "file_name", "image", "image_id", "imageid", "path", "name"}


def _fields(line: str) -> list[str]:
    """A line's fields: tab-separated if it has a tab, else comma-, else space-separated."""
    if "\t" in line:
        return [f.strip() for f in line.split("\t")]
    if "," in line:
        return [f.strip() for f in line.split(",")]
    return line.split()


def _class_of(field: str) -> str:
    """The class a second column gives: the whole field, or a ``PredictionString``'s first token.

    ImageNet's ``PredictionString`` is a class then four box coordinates, repeated.
    """
    tokens = field.split()
    numeric = len(tokens) >= 5 and all(t.lstrip("-").isdigit() for t in tokens[1:5])
    return tokens[0] if numeric else field.strip().strip('"')


def read_label_file(path: Path) -> dict[str, str]:
    """Image -> class, keyed by the first column as written (a file name or a relative path).

    An entry without an extension is keyed ``"<name>."`` too, so that any image of that name
    and some extension finds it, while ``x.jpg`` never takes the class of a listed ``x.png``.

    Raises:
        DataError: Unreadable, or a line without a second column.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(
            f"label file {str(path)!r} cannot be read ({type(err).__name__}); give a text file "
            "of 'file name, class' lines"
        ) from None
    table: dict[str, str] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        fields = _fields(line)
        if number == 1 and fields[0].strip('"').lower() in _HEADER_NAMES:
            continue
        if len(fields) < 2 or not fields[1].strip():
            raise DataError(
                f"label file {str(path)!r}, line {number}: {line.strip()[:80]!r} has no class; "
                "each line is a file name then its class (tab, comma or space between them)"
            )
        key = fields[0].strip('"').removeprefix("./")
        table[key] = _class_of(fields[1])
        if not Path(key).suffix:
            table[key + "."] = table[key]
    return table


def find_label_file(folder: Path) -> Path | None:
    """A well-known label file in ``folder``, or ``None``."""
    return next((folder / n for n in KNOWN_LABEL_FILES if (folder / n).is_file()), None)


def _lookup(table: dict[str, str], rel: str) -> str | None:
    """The class ``table`` gives the image at ``rel``, or ``None``.

    Looked up by its relative path, then its name (as written, or without an extension where
    the file gives none).
    """
    p = Path(rel)
    for key in (rel, p.name, str(p.with_suffix("")) + ".", p.stem + "."):
        if key in table:
            return table[key]
    return None


def labels_from_file(
    rel: list[str], table: dict[str, str], path: Path, split: Path
) -> list[str] | None:
    """The class of every image (``rel``: paths under ``split``), from ``table``.

    ``None`` where ``table`` names none of them (the file is another split's).

    Raises:
        DataError: The file names some of the split's images but not all, or names files
            where two images share a name.
    """
    found = [_lookup(table, r) for r in rel]
    missing = [r for r, label in zip(rel, found, strict=True) if label is None]
    if len(missing) == len(rel):
        return None
    if missing:
        raise DataError(
            f"label file {str(path)!r} has no class for {len(missing)} of the {len(rel)} images "
            f"of {str(split)!r} (e.g. {missing[0]!r}); give every image a line, or remove the "
            "images without one"
        )
    by_path = all(r in table for r in rel)
    names = [Path(r).name for r in rel]
    if not by_path and len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(
            f"label file {str(path)!r} names files, but images of {str(split)!r} share a name "
            f"({twice!r}); give paths relative to {str(split)!r} in its first column"
        )
    return [label for label in found if label is not None]


__all__ = ["KNOWN_LABEL_FILES", "find_label_file", "labels_from_file", "read_label_file"]
