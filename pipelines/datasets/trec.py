"""TREC question classification (Li & Roth 2002) as the named data set `trec`.

Its files are lines `COARSE:fine question tokens` in Latin-1 (`train_5500.label`, 5,452 questions;
`TREC_10.label`, 500); the reader yields the rows a user's CSV would give, {"text", "label"} with
the 6 coarse classes, so `rnnkit train classify --data trec` takes the same code path as a file.
Read from `RNNKIT_DATA_DIR/trec/`, else downloaded once from the authors' page.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pipelines.datasets.data_files import NamedDataset, Row
from pipelines.datasets.downloads import fetch
from serving.errors import UserError

BASE_URL = "https://cogcomp.seas.upenn.edu/Data/QA/QC/"
FILES = {"train": "train_5500.label", "test": "TREC_10.label"}
MIRROR_FOLDER = "trec"
COLUMNS = {"text_column": "text", "label_column": "label"}


def split_file(split: str) -> Path:
    """The local file of a split (the offline mirror's, or a download).

    Args:
        split: `train` or `test`.
    """
    return fetch(BASE_URL + FILES[split], MIRROR_FOLDER, FILES[split], "TREC")


def rows(split: str, columns: Sequence[str] = ("text", "label"),
         ) -> Iterator[tuple[int, Row]]:
    """(line, {"text": question, "label": coarse class}) of a split.

    Args:
        split: `train` or `test`.
        columns: the columns to keep, of `text`, `label` and `fine` (the 50 fine classes).
    """
    path = split_file(split)
    unknown = [c for c in columns if c not in ("text", "label", "fine")]
    if unknown:
        raise UserError(f"data set trec has no column {unknown[0]!r}; its columns are "
                        "'text', 'label' (6 coarse classes), 'fine' (50 classes)",
                        "pass --label-column fine or label, or drop the column flags for trec")
    with open(path, encoding="latin-1") as handle:  # the files are Latin-1, not UTF-8
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            label, _, text = line.rstrip("\n").partition(" ")
            coarse, colon, _ = label.partition(":")
            if not colon or not text:
                raise UserError(f"{path}, line {number}: not `COARSE:fine question`",
                                "replace the file with an intact copy of " + BASE_URL)
            row = {"text": text, "label": coarse, "fine": label}
            yield number, {c: row[c] for c in columns}


def named_dataset() -> NamedDataset:
    """The `trec` entry of pipelines.datasets.data_files.NAMED_DATASETS."""
    return NamedDataset(name="trec", kind="classify", columns=COLUMNS, splits=("train", "test"),
                        rows=rows, description="TREC-6 question classification (5,452 / 500)")
