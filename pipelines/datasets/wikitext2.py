"""WikiText-2 (tokenised, v1) as the named data set `wikitext2`, for the language_model task.

The three `wiki.*.tokens` files are read line by line by
pipelines.datasets.text_corpus.iter_text_lines, exactly as a user's `--data corpus.txt` is; one row
per line (blank lines too: each line ends in `<eos>`, the standard counting of 2,088,628 / 217,646 /
245,569 tokens). Read from `RNNKIT_DATA_DIR/wikitext2/wikitext-2/`; there is no download (the
canonical host is a zip).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pipelines.config import data_dir
from pipelines.datasets.data_files import NamedDataset, Row
from pipelines.datasets.text_corpus import iter_text_lines
from serving.errors import UserError

FILES = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens",
         "test": "wiki.test.tokens"}
MIRROR_FOLDER = "wikitext2/wikitext-2"
URL = "https://wikitext.smerity.com/wikitext-2-v1.zip"


def split_file(split: str) -> Path:
    """The local file of a split, from the offline mirror.

    Args:
        split: `train`, `validation` or `test`.
    """
    root = data_dir()
    path = root / MIRROR_FOLDER / FILES[split] if root is not None else None
    if path is None or not path.is_file():
        raise UserError(f"WikiText-2's {FILES[split]} is not in "
                        f"{root / MIRROR_FOLDER if root else 'RNNKIT_DATA_DIR (unset)'}",
                        f"unzip {URL} there and set RNNKIT_DATA_DIR to its parent folder")
    return path


def rows(split: str, columns: Sequence[str] = ("text",)) -> Iterator[tuple[int, Row]]:
    """(line, {column: text}) for each line of a split.

    Args:
        split: `train`, `validation` or `test`.
        columns: one name, the config's text column.
    """
    column = columns[0] if columns else "text"
    return ((line, {column: row[column]})
            for line, row in iter_text_lines(split_file(split), column))


def named_dataset() -> NamedDataset:
    """The `wikitext2` entry of pipelines.datasets.data_files.NAMED_DATASETS."""
    return NamedDataset(name="wikitext2", kind="language_model", columns={},
                        splits=("train", "validation", "test"), rows=rows,
                        description="WikiText-2 tokenised (2.1M / 218k / 246k tokens)")
