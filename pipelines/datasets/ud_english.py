"""Universal Dependencies English EWT r2.10 (CoNLL-U) as the named data set `ud_en_ewt`.

The three .conllu files are read by pipelines.datasets.data_files.iter_tagged, exactly as a user's
`--data en_ewt-ud-train.conllu` is (FORM and UPOS). Read from `RNNKIT_DATA_DIR/ud_english_ewt/`,
else downloaded once from the UD release on GitHub (the files TFDS's builder also downloads).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pipelines.datasets.data_files import NamedDataset, Row, iter_tagged
from pipelines.datasets.downloads import fetch

BASE_URL = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.10/"
FILES = {"train": "en_ewt-ud-train.conllu", "validation": "en_ewt-ud-dev.conllu",
         "test": "en_ewt-ud-test.conllu"}
MIRROR_FOLDER = "ud_english_ewt"


def split_file(split: str) -> Path:
    """The local .conllu file of a split (the offline mirror's, or a download).

    Args:
        split: `train`, `validation` or `test`.
    """
    return fetch(BASE_URL + FILES[split], MIRROR_FOLDER, FILES[split], "UD English EWT")


def rows(split: str, columns: Sequence[str] = ("", "")) -> Iterator[tuple[int, Row]]:
    """(first line, {"tokens", "tags"}) of each sentence of a split.

    Args:
        split: `train`, `validation` or `test`.
        columns: [token column, tag column] specs ('' for FORM and UPOS; e.g. "xpos").
    """
    return iter_tagged(split_file(split), *columns)


def named_dataset() -> NamedDataset:
    """The `ud_en_ewt` entry of pipelines.datasets.data_files.NAMED_DATASETS."""
    return NamedDataset(name="ud_en_ewt", kind="tag",
                        columns={"token_column": "", "tag_column": ""},
                        splits=("train", "validation", "test"), rows=rows,
                        description="UD English EWT r2.10 UPOS (12,543 / 2,001 / 2,077 sentences)")
