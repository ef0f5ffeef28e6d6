"""A user's data files as streams: CSV/TSV/JSONL tables, CoNLL/CoNLL-U/JSONL tagged sentences,
and the data sets rnnkit knows by name (`--data trec`), all read through the same rows.

Files are read line by line (never whole), so memory does not grow with a file's size: Python's
`csv` module parses quoting and embedded newlines, each physical line is decoded as UTF-8 on its
own so an invalid byte is reported with its line, and `.gz` files are decompressed as they stream.
Every problem a user can fix raises `serving.errors.UserError` naming the file (and line).

Two levels, one code path:
- `iter_table` / `iter_tagged` yield `(line, row)` in Python: tasks scan a training file once with
  them (label set, empty rows, errors as UserError before any training starts);
- `read_table` / `read_tagged` wrap the same generators in `tf.data.Dataset.from_generator`.
A *source* (the config's `data`, `validation_data`, `test_data`) is a path or a registered name;
`iter_source` reads either.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import difflib
import gzip
import hashlib
import importlib
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from pipelines.config import TrainConfig
from serving.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf

TABLE_FORMATS = (".csv", ".tsv", ".jsonl")
TAGGED_FORMATS = (".conll", ".conllu", ".txt", ".jsonl")
# Fields longer than this are a malformed file (an unclosed quote swallowing the rest), not text.
MAX_FIELD_CHARS = 10_000_000
# Rows per call from the Python readers into tf.data (per-row calls would dominate the cost).
GENERATOR_BATCH = 512
# Marks a header name given to more than one column (reading it would be ambiguous).
DUPLICATE = object()
# CoNLL-U's ten columns; `--token-column` and `--tag-column` may name them.
CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")

Row = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger("pipelines.datasets.data_files")


def drop_empty_rows(where: str, empty: int, rows: int, max_fraction: float, what: str,
                    columns: str, enforce: bool = True) -> None:
    """Log the rows a scan dropped as empty; more than `max_fraction` of them is an error.

    Args:
        where: the part, as errors name it.
        empty: rows dropped.
        rows: rows kept.
        max_fraction: the config's `max_empty_fraction`.
        what: what made a row empty, e.g. "empty text".
        columns: the flags to check, e.g. "--text-column".
        enforce: False only logs (parts other than training may be any share empty).
    """
    if not empty:
        return
    share = empty / (empty + rows)
    log.warning("%s: dropped %d of %d rows with %s", where, empty, empty + rows, what)
    if enforce and share > max_fraction:
        raise UserError(f"{where}: {empty} of {empty + rows} rows ({share:.0%}) have {what}, "
                        f"more than max_empty_fraction={max_fraction:g}",
                        f"check {columns}, or allow more with --set max_empty_fraction=0.5")


@dataclasses.dataclass
class DataFilesConfig(TrainConfig):
    """Where a task trained on rows reads them (and TrainConfig's settings); see each task's
    config for the formats its files take.

    Args:
        data: training data: a file (optionally .gz) or the name of a data set rnnkit knows.
        validation_data: validation file; empty holds out a seeded validation_fraction of
            `data` (a named data set uses its validation split).
        test_data: test file `rnnkit evaluate` scores; empty for a named data set's test split.
    """

    data: str = ""
    validation_data: str = ""
    test_data: str = ""


def file_format(path: Path | str, formats: Sequence[str] = TABLE_FORMATS) -> str:
    """The format of a data file by its extension (`.csv`, `.tsv`, ...), ignoring a final `.gz`.

    Args:
        path: the file.
        formats: the extensions the caller reads.
    """
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in formats:
        raise UserError(f"{path}: cannot read files of type {suffix or '(no extension)'!r}",
                        f"use one of {', '.join(formats)} (optionally .gz-compressed)")
    return suffix


def _check_file(path: Path) -> None:
    if not path.exists():
        fix = "check the path given to --data"
        if not path.suffix and len(path.parts) == 1:  # a bare word: meant as a data set name?
            close = difflib.get_close_matches(path.name, list(NAMED_DATASETS), n=1)
            fix += (f", or name a data set rnnkit knows: {', '.join(sorted(NAMED_DATASETS))}"
                    + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UserError(f"data file {path} does not exist", fix)
    if not path.is_file():
        raise UserError(f"{path} is not a file", "pass a .csv, .tsv, .jsonl (or CoNLL) file")


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _lines(path: Path, handle: IO[bytes], counter: list[int]) -> Iterator[str]:
    """Each physical line decoded as UTF-8 on its own; counter[0] is the current line number."""
    try:
        for raw in handle:
            counter[0] += 1
            if counter[0] == 1 and raw.startswith(codecs.BOM_UTF8):
                # Excel's "CSV UTF-8" and Windows editors begin a file with a byte-order mark,
                # which would otherwise stick to the first column's name.
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}, line {counter[0]}: invalid UTF-8 "
                                f"(byte 0x{raw[err.start]:02x} at column {err.start + 1})",
                                "save the file as UTF-8") from None
    except (OSError, EOFError) as err:  # a truncated or corrupt .gz
        raise UserError(f"{path}, line {counter[0] + 1}: cannot read ({err})",
                        "replace the file with an intact copy") from None


def _unknown_column(where: Path | str, wanted: Sequence[str], existing: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in existing]
    if missing and not existing:
        raise UserError(f"{where} has no columns: its first line is blank",
                        "put the column names on the first line (or, for .jsonl, the keys in "
                        "every object)")
    if missing:
        flag = "columns" if len(missing) > 1 else "column"
        fix = ("pick existing ones with --text-column/--label-column (or the task's other "
               "column flags)")
        # One column whose name holds another separator: Excel in many locales saves ";".
        separators = [s for s in (";", "\t", "|", ",") if len(existing) == 1 and s in existing[0]]
        if separators:
            fix = (f"its header looks {separators[0]!r}-separated, but .csv files are read as "
                   "comma-separated and .tsv files as tab-separated: save it with commas as "
                   ".csv (or with tabs as .tsv)")
        raise UserError(f"{where} has no {flag} {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(map(repr, existing))}", fix)


def _csv_reader(path: Path, lines: Iterator[str], fmt: str) -> Any:
    csv.field_size_limit(MAX_FIELD_CHARS)
    return csv.reader(lines, delimiter="\t" if fmt == ".tsv" else ",", strict=True)


def table_columns(path: Path | str) -> list[str]:
    """The columns of a table file: the CSV/TSV header row, or the keys of the first JSONL object.

    Raises UserError for a missing file, an unsupported extension or an empty file.

    Args:
        path: a .csv, .tsv or .jsonl file, optionally .gz.
    """
    return list(_header(Path(path)))


def _header(path: Path) -> dict[str, Any]:
    """The header row as {column: "" or DUPLICATE} (or the first JSONL object)."""
    _check_file(path)
    for _, row in _raw_table(path, file_format(path)):
        return row
    raise UserError(f"{path} is empty", "pass a file with a header row and at least one row")


def _check_columns(path: Path, columns: Sequence[str]) -> None:
    """Every requested column exists, once: else a UserError naming the file's columns."""
    header = _header(path)
    _unknown_column(path, columns, list(header))
    for column in columns:  # a name the header repeats would be read ambiguously
        if header.get(column) is DUPLICATE:
            raise UserError(f"{path} has more than one column named {column!r}",
                            "rename the columns so that each name is used once")


def _raw_table(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, full row) of a table file; for CSV/TSV the first yield is the header's own line."""
    counter = [0]
    with _open_binary(path) as handle:
        lines = _lines(path, handle, counter)
        if fmt == ".jsonl":
            for text in lines:
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}, line {counter[0]}: not a JSON object ({err.msg})",
                                    "write one JSON object per line") from None
                if not isinstance(record, dict):
                    raise UserError(f"{path}, line {counter[0]}: not a JSON object",
                                    "write one JSON object per line") from None
                yield counter[0], record
            return
        reader = _csv_reader(path, lines, fmt)
        header: list[str] | None = None
        start = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise UserError(f"{path}, line {start}: malformed row ({err})",
                                "check the quoting of that row") from None
            if header is None:
                header = [c.strip() for c in cells]
                yield start, {c: DUPLICATE if header.count(c) > 1 else "" for c in header}
            elif cells:  # csv gives [] for a blank line
                if len(cells) != len(header):
                    raise UserError(f"{path}, line {start}: malformed row with {len(cells)} "
                                    f"fields, the header has {len(header)}",
                                    "quote fields that contain the delimiter, or fix the row")
                yield start, dict(zip(header, cells, strict=True))
            start = reader.line_num + 1


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def iter_table(path: Path | str, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Stream a .csv/.tsv/.jsonl file (optionally .gz) as (line, {column: text}) pairs.

    Only the requested columns are kept; JSON values that are not strings become their text.
    Checks the file and the columns before the first row, so errors come before any work.

    Args:
        path: the file.
        columns: the columns to keep; each must exist (the error lists the ones that do).
    """
    path = Path(path)
    _check_columns(path, columns)
    rows = _raw_table(path, file_format(path))
    if file_format(path) != ".jsonl":
        next(rows)  # the header
    for line, row in rows:
        if any(c not in row for c in columns):  # JSONL objects may differ from the first one
            _unknown_column(f"{path}, line {line},", columns, list(row))
        yield line, {c: _as_text(row[c]) for c in columns}


def read_table(path: Path | str, columns: Sequence[str]) -> tf.data.Dataset:
    """Stream a .csv/.tsv/.jsonl file (optionally .gz) as a dataset of {column: tf.string scalar}.

    Missing file, unsupported extension, empty file and unknown columns raise UserError here;
    invalid UTF-8 and malformed rows surface when that row is read (scan with `iter_table` first
    to get them as UserError).

    Args:
        path: the file.
        columns: the columns to keep.
    """
    import tensorflow as tf

    path = Path(path)
    _check_columns(path, columns)
    columns = list(columns)

    def generate() -> Iterator[dict[str, list[str]]]:
        rows = (row for _, row in iter_table(path, columns))
        while block := list(itertools.islice(rows, GENERATOR_BATCH)):
            yield {c: [row[c] for row in block] for c in columns}

    # Rows cross from Python in blocks: one call per row would cost more than parsing it.
    return tf.data.Dataset.from_generator(
        generate, output_signature={c: tf.TensorSpec([None], tf.string) for c in columns},
    ).unbatch()


# --- tagged sentences ---------------------------------------------------------------------------

def _column_index(spec: str, default: int, fmt: str, width: int, path: Path, which: str) -> int:
    """A 0-based column index from a CoNLL column spec: '' (default), a 1-based number or a
    CoNLL-U column name."""
    if not spec:
        return default if default >= 0 else width + default
    if spec.isdigit() and int(spec) >= 1:
        return int(spec) - 1
    if fmt == ".conllu" and spec.lower() in CONLLU_COLUMNS:
        return CONLLU_COLUMNS.index(spec.lower())
    names = "a 1-based column number" + (f" or one of {list(CONLLU_COLUMNS)}"
                                          if fmt == ".conllu" else "")
    raise UserError(f"{path}: --{which}-column {spec!r} is not a column of a {fmt} file",
                    f"pass {names}")


DOCUMENT_START = "-DOCSTART-"  # CoNLL-2003 separates documents with this line


def iter_tagged(path: Path | str, token_column: str = "", tag_column: str = "",
                ) -> Iterator[tuple[int, Row]]:
    """Stream tagged sentences as (first line, {"tokens": [...], "tags": [...]}).

    CoNLL (`.conll`, `.txt`): one token per line, tab- or whitespace-separated columns, a blank
    line between sentences; tokens from the first column, tags from the last by default;
    `-DOCSTART-` lines (CoNLL-2003's document separators) are skipped.
    CoNLL-U (`.conllu`): FORM and UPOS by default; comment lines, multi-word token ranges (`3-4`)
    and empty nodes (`8.1`) are skipped. JSONL: `{"tokens": [...], "tags": [...]}` per line.

    Args:
        path: the file, optionally .gz.
        token_column: CoNLL: a 1-based column number or a CoNLL-U column name; JSONL: the key.
            Empty for the default.
        tag_column: the same for the tags.
    """
    path = Path(path)
    _check_file(path)
    fmt = file_format(path, TAGGED_FORMATS)
    if fmt == ".jsonl":
        yield from _iter_tagged_jsonl(path, token_column or "tokens", tag_column or "tags")
        return
    conllu = fmt == ".conllu"
    default_token, default_tag = (1, 3) if conllu else (0, -1)
    counter = [0]
    tokens: list[str] = []
    tags: list[str] = []
    start = width = 0
    seen_any = False
    with _open_binary(path) as handle:
        for text in _lines(path, handle, counter):
            line = text.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    yield start, {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
                continue
            if conllu and line.startswith("#"):
                continue
            cells = line.split("\t") if conllu or "\t" in line else line.split()
            if not conllu and cells[0] == DOCUMENT_START:
                if tokens:  # CoNLL-2003's document separator, no sentence of its own
                    yield start, {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
                continue
            seen_any = True
            if conllu:
                if len(cells) != 10:
                    raise UserError(f"{path}, line {counter[0]}: a CoNLL-U line has 10 "
                                    f"tab-separated columns, this one {len(cells)}",
                                    "fix the line (columns are separated by single tabs)")
                if "-" in cells[0] or "." in cells[0]:
                    continue  # multi-word token ranges and empty nodes carry no tag of their own
            if not tokens:
                start, width = counter[0], len(cells)
                token_at = _column_index(token_column, default_token, fmt, width, path, "token")
                tag_at = _column_index(tag_column, default_tag, fmt, width, path, "tag")
            elif len(cells) != width:
                raise UserError(f"{path}, line {counter[0]}: {len(cells)} columns where the "
                                f"sentence starting at line {start} has {width}, so its tokens "
                                "and tags do not line up", "give every token line the same "
                                "columns (token and tag)")
            if max(token_at, tag_at) >= len(cells) or token_at == tag_at:
                raise UserError(f"{path}, line {counter[0]}: {len(cells)} column(s), no separate "
                                f"token (column {token_at + 1}) and tag (column {tag_at + 1})",
                                "write `token<TAB>tag` lines, or pick columns with "
                                "--token-column/--tag-column")
            tokens.append(cells[token_at])
            tags.append(cells[tag_at])
    if tokens:
        yield start, {"tokens": tokens, "tags": tags}
    if not seen_any:
        raise UserError(f"{path} has no tagged tokens", "pass a CoNLL file: one `token tag` "
                        "per line, a blank line between sentences")


def _iter_tagged_jsonl(path: Path, token_key: str, tag_key: str) -> Iterator[tuple[int, Row]]:
    seen_any = False
    for line, record in _raw_table(path, ".jsonl"):
        seen_any = True
        _unknown_column(f"{path}, line {line},", [token_key, tag_key], list(record))
        tokens, tags = record[token_key], record[tag_key]
        if not (isinstance(tokens, list) and isinstance(tags, list)):
            raise UserError(f"{path}, line {line}: {token_key!r} and {tag_key!r} must be lists",
                            'write {"tokens": ["a", "b"], "tags": ["X", "Y"]}')
        if len(tokens) != len(tags):
            raise UserError(f"{path}, line {line}: {len(tokens)} tokens but {len(tags)} tags",
                            "give every token exactly one tag")
        yield line, {"tokens": [_as_text(t) for t in tokens], "tags": [_as_text(t) for t in tags]}
    if not seen_any:
        raise UserError(f"{path} is empty", "pass a file with one JSON sentence per line")


def read_tagged(path: Path | str, token_column: str = "", tag_column: str = "",
                ) -> tf.data.Dataset:
    """Stream tagged sentences as a dataset of {"tokens": tf.string [n], "tags": tf.string [n]}.

    Args:
        path: a .conll, .conllu, .txt or .jsonl file, optionally .gz (see `iter_tagged`).
        token_column: the token column ('' for the default).
        tag_column: the tag column ('' for the default).
    """
    import tensorflow as tf

    path = Path(path)
    _check_file(path)
    file_format(path, TAGGED_FORMATS)
    return tf.data.Dataset.from_generator(
        lambda: (row for _, row in iter_tagged(path, token_column, tag_column)),
        output_signature={"tokens": tf.TensorSpec([None], tf.string),
                          "tags": tf.TensorSpec([None], tf.string)})


# --- data sets rnnkit knows by name -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NamedDataset:
    """A data set `--data NAME` selects, read as the same rows a user's file gives.

    Args:
        name: the name on the command line (`trec`).
        kind: the task kind it suits: classify, tag, seq2seq or caption.
        columns: config field -> this data set's column, e.g. {"text_column": "text",
            "label_column": "label"}; tasks use these instead of the user-file defaults.
        splits: the splits it has, e.g. ("train", "test") or ("train", "validation", "test").
        rows: (split, columns) -> (line, row) pairs, like `iter_table` / `iter_tagged`.
        description: one line for help texts.
        images: for a data set that carries its own images (flickr8k), split -> {image id in
            the rows: encoded image bytes}; None when rows name files.
    """

    name: str
    kind: str
    columns: dict[str, str]
    splits: tuple[str, ...]
    rows: Callable[[str, Sequence[str]], Iterator[tuple[int, Row]]]
    description: str = ""
    images: Callable[[str], dict[str, bytes]] | None = None


# name -> "module:function" returning its NamedDataset; imported only when used. A new data set
# is one line here plus its module.
NAMED_DATASETS: dict[str, str] = {
    "imdb": "pipelines.datasets.imdb:named_dataset",
    "trec": "pipelines.datasets.trec:named_dataset",
    "ud_en_ewt": "pipelines.datasets.ud_english:named_dataset",
    "spa_eng": "pipelines.datasets.spa_eng:named_dataset",
    "flickr8k": "pipelines.datasets.flickr8k:named_dataset",
    "wikitext2": "pipelines.datasets.wikitext2:named_dataset",
}


def named_dataset(name: str) -> NamedDataset | None:
    """The registered data set of that name, or None when the name is not one (a path, then).

    Args:
        name: a `--data` value.
    """
    if name not in NAMED_DATASETS:
        return None
    module_name, _, function = NAMED_DATASETS[name].partition(":")
    return getattr(importlib.import_module(module_name), function)()


def iter_source(source: str, columns: Sequence[str], split: str = "train", tagged: bool = False,
                kind: str | None = None) -> Iterator[tuple[int, Row]]:
    """Rows of a source: a registered data set's split, or a file (table or tagged sentences).

    Args:
        source: a data set name or a file path.
        columns: table columns to keep; for tagged files, [token_column, tag_column] specs.
        split: the named data set's split (ignored for files).
        tagged: read a file as tagged sentences (`iter_tagged`) instead of a table.
        kind: the reading task's kind; a named data set of another kind is an error.
    """
    named = named_dataset(source)
    if named is not None and kind is not None and named.kind != kind:
        suited = sorted(n for n in NAMED_DATASETS if (named_dataset(n) or named).kind == kind)
        raise UserError(f"data set {source!r} is for {named.kind} tasks, not {kind}",
                        f"pass a file, or one of {suited}" if suited else "pass a file")
    if named is not None:
        if split not in named.splits:
            raise UserError(f"data set {source!r} has no {split!r} split (it has "
                            f"{list(named.splits)})", "pass the split's file instead")
        return named.rows(split, columns)
    if not source:
        raise UserError("no training data given", "pass --data FILE (or a data set name: "
                        f"{', '.join(sorted(NAMED_DATASETS))})")
    if tagged:
        return iter_tagged(source, *columns)
    return iter_table(source, columns)


def source_label(source: str, split: str = "train") -> str:
    """How messages name a source: the file path, or `NAME (split)`.

    Args:
        source: a data set name or a file path.
        split: the split, for named data sets.
    """
    return f"{source} ({split})" if source in NAMED_DATASETS else str(source)


# --- training, validation and test parts of a task's sources ------------------------------------

PARTS = ("train", "validation", "test")


def in_validation(key: str, fraction: float, seed: int) -> bool:
    """Whether a row belongs to the held-out validation part: a keyed hash of its text, so the
    same seed always holds out the same rows, wherever they sit in the file.

    Args:
        key: the row's text (for tagged sentences, its tokens joined by spaces).
        fraction: share of rows held out.
        seed: the hash key.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8,
                             key=seed.to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


def hold_out(rows: Iterable[T], key: Callable[[T], str], config: Any, held_out: bool,
             source: str) -> Iterator[T]:
    """The rows of one side of the held-out split (see `in_validation`).

    Taking the held-out side, a file none of whose rows hashes into it is an error: rows of the
    same text go together, so a small file, or one of few distinct texts, can hold out nothing.

    Args:
        rows: the training source's rows.
        key: a row's text, the hash's input.
        config: the task config (`validation_fraction`, `seed`).
        held_out: True for the validation rows, False for the training rows.
        source: the file or data set, for the message.
    """
    seen = kept = 0
    for row in rows:
        seen += 1
        if in_validation(key(row), config.validation_fraction, config.seed) == held_out:
            kept += 1
            yield row
    if held_out and seen and not kept:
        raise UserError(f"holding out validation_fraction={config.validation_fraction:g} of "
                        f"{source} picked none of its {seen} rows (a hash of each row's text, "
                        "or for captions its image, picks them, so rows of one text or image "
                        "go together: a small file, or one of few distinct ones, can get none)",
                        "pass --validation-data FILE, or raise --set validation_fraction=...")


def part_source(config: Any, part: str) -> tuple[str, str, bool | None]:
    """Where a part's rows come from: (source, split, hold-out), from the config's `data`,
    `validation_data`, `test_data`, `validation_fraction`.

    hold-out is None to take every row, True for only the held-out validation rows of the
    training source, False for every row but those.

    Args:
        config: a task config with those fields.
        part: `train`, `validation` or `test`.
    """
    named = named_dataset(config.data) if config.data else None
    validation_split = named is not None and "validation" in named.splits
    holding_out = not config.validation_data and not validation_split
    if holding_out and not 0 < config.validation_fraction < 1:
        raise UserError(f"validation_fraction={config.validation_fraction} must be between 0 "
                        "and 1", "use e.g. --set validation_fraction=0.1, or pass "
                        "--validation-data FILE")
    if part == "train":
        return config.data, "train", (False if holding_out else None)
    if part == "validation":
        if config.validation_data:
            return config.validation_data, "validation", None
        return config.data, ("validation" if validation_split else "train"), \
            (True if holding_out else None)
    if part == "test":
        if config.test_data:
            return config.test_data, "test", None
        if named is not None and "test" in named.splits:
            return config.data, "test", None
        raise UserError("this run has no test data",
                        "score a file with: rnnkit evaluate TASK --run-dir DIR "
                        "--data test.csv (or train with --test-data FILE)")
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def source_columns(source: str, config: Any, fields: Sequence[str]) -> list[str]:
    """The column names a source is read with: the config's, where a named data set's own
    stand in for the ones left at their defaults (so `--data trec --label-column fine` reads
    TREC's fine classes, and `--data trec` alone its coarse ones).

    Args:
        source: a data set name or a file path.
        config: the task config, holding e.g. `text_column` and `label_column`.
        fields: the config fields naming the columns, e.g. ("text_column", "label_column").
    """
    named = named_dataset(source)
    if named is None:
        return [getattr(config, f) for f in fields]
    defaults = ({f.name: f.default for f in dataclasses.fields(config)}
                if dataclasses.is_dataclass(config) else {})
    columns = [named.columns.get(f, getattr(config, f)) if getattr(config, f) == defaults.get(f)
               else getattr(config, f) for f in fields]
    for i, column in enumerate(columns):
        if column and column in columns[:i]:
            flags = " and ".join("--" + f.replace("_", "-") for f in fields)
            raise UserError(f"{source}: {flags} would both read its column {column!r}",
                            f"name a different column of {source} for each")
    return columns


def check_part_exists(config: Any, part: str, fields: Sequence[str] = ()) -> None:
    """A part read from a file of its own (`--validation-data`, `--test-data`) must exist,
    with the columns the task reads: checked before training, so a mistyped test file does not
    wait for the end of it.

    Args:
        config: the task config.
        part: `validation` or `test`.
        fields: the config fields naming the columns a table file must have.
    """
    source = getattr(config, f"{part}_data", None)
    if not source or source in NAMED_DATASETS:
        return
    if not Path(source).exists():
        flag = "--validation-data" if part == "validation" else \
            "--test-data (`rnnkit evaluate`: --data)"
        raise UserError(f"{part} data file {source} does not exist",
                        f"check the path given to {flag}")
    table = Path(source).name.lower().removesuffix(".gz").endswith(TABLE_FORMATS)
    if fields and table:
        _check_columns(Path(source), source_columns(source, config, fields))


def iter_part(config: Any, part: str, fields: Sequence[str], key: Callable[[Row], str],
              tagged: bool = False, kind: str | None = None) -> Iterator[tuple[int, Row]]:
    """(line, row) of one part of a task's data (see `part_source`).

    Args:
        config: the task config (data, validation_data, test_data, validation_fraction, seed
            and the column fields).
        part: `train`, `validation` or `test`.
        fields: the config fields naming the columns to read.
        key: the row's hashing key for the held-out split (its text).
        tagged: read files as tagged sentences rather than tables.
        kind: the task's kind (`classify`, `tag`, ...); a named data set of another kind is an
            error.

    With `max_train_examples` set, the training part keeps its first that many rows and the
    validation part the same share of its own (tests and smoke runs).
    """
    if part != "train":
        check_part_exists(config, part, () if tagged else fields)
    source, split, held_out = part_source(config, part)
    rows = iter_source(source, source_columns(source, config, fields), split, tagged, kind)
    if held_out is not None:
        rows = hold_out(rows, lambda item: key(item[1]), config, held_out, source)
    limit = getattr(config, "max_train_examples", None)
    if limit is not None and part != "test":
        if limit < 1:
            raise UserError(f"max_train_examples={limit} leaves no training rows",
                            "use e.g. --set max_train_examples=2000, or leave it unset for all")
        if part == "validation":  # the same share of validation rows as of training rows
            ratio = config.validation_fraction / (1 - config.validation_fraction)
            limit = max(1, math.ceil(limit * ratio))
        rows = itertools.islice(rows, limit)
    yield from rows


def data_key(config: Any, fields: Sequence[str]) -> tuple:
    """The settings that decide a training part's rows, to reuse one scan of them.

    Args:
        config: the task config.
        fields: its column fields.
    """
    names = ("data", "validation_data", "validation_fraction", "seed", "max_train_examples",
             *fields)
    return tuple(getattr(config, name, None) for name in names)


def part_label(config: Any, part: str) -> str:
    """How messages name a part's source: `train.csv`, `trec (test)`, `train.csv (held-out
    0.1)`, and `train.csv (all but the held-out 0.1)` for the rows training keeps of it (counts
    in messages are of those rows, not of the whole file).

    Args:
        config: the task config.
        part: `train`, `validation` or `test`.
    """
    source, split, held_out = part_source(config, part)
    label = source_label(source, split)
    if held_out is None:
        return label
    fraction = f"held-out {config.validation_fraction:g}"
    return f"{label} ({fraction})" if held_out else f"{label} (all but the {fraction})"
