"""Spanish-English sentence pairs (Anki/Tatoeba, TensorFlow's NMT tutorial) as a TFDS builder.

The archive is downloaded from TensorFlow's bucket, or read unchanged from
`RNNKIT_DATA_DIR/spa-eng/spa-eng.zip` where that file exists (machines without internet); its
checksum is registered here, so both paths are verified. Splits are fixed by a stable hash of the
Spanish sentence, so a sentence and all its translations always land in the same split.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from pipelines.config import data_dir, tfds_dir
from pipelines.datasets import downloads, preparation_lock
from serving.errors import DataUnavailable, UserError

log = logging.getLogger("pipelines.datasets.spa_eng")

URL = "https://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip"
ARCHIVE = "spa-eng.zip"
MEMBER = "spa-eng/spa.txt"
SHA256 = "0c4fd7825d3d872488d38c157f784e035edab4f2ff0df25a2a208790ecb5b58f"
SIZE = 2638744
# Percent of Spanish sentences (by hash bucket 0..99) in each split, in bucket order.
SPLIT_PERCENT = {"train": 90, "validation": 5, "test": 5}


def split_key(spanish: str) -> str:
    """The form of a Spanish sentence its split is decided on: NFC, lower case, single spaces.

    Args:
        spanish: the raw Spanish sentence.
    """
    return " ".join(unicodedata.normalize("NFC", spanish).lower().split())


def split_of(spanish: str) -> str:
    """The split a Spanish sentence belongs to, by a hash stable across runs and machines.

    Args:
        spanish: the raw Spanish sentence.
    """
    # sha256, not hash(): Python salts str hashes per process.
    bucket = int.from_bytes(hashlib.sha256(split_key(spanish).encode()).digest()[:8], "big") % 100
    upper = 0
    for split, percent in SPLIT_PERCENT.items():
        upper += percent
        if bucket < upper:
            return split
    raise AssertionError("SPLIT_PERCENT must sum to 100")


def read_pairs(archive: Path) -> list[tuple[str, str]]:
    """The (spanish, english) pairs of spa-eng.zip, in file order.

    Args:
        archive: spa-eng.zip, whose `spa-eng/spa.txt` holds `english<TAB>spanish` lines.
    """
    with zipfile.ZipFile(archive) as zipped:
        text = zipped.read(MEMBER).decode("utf-8")
    pairs = []
    for line in text.splitlines():
        columns = line.split("\t")
        if len(columns) >= 2 and columns[0].strip() and columns[1].strip():
            pairs.append((columns[1].strip(), columns[0].strip()))
    return pairs


class SpaEng(tfds.core.GeneratorBasedBuilder):
    """Anki/Tatoeba Spanish-English pairs, split about 90/5/5 by a hash of the Spanish side."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Raw pairs; splits by sha256 of the NFC, lower-cased Spanish side."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Without internet, put {ARCHIVE} (from {URL}) unchanged into the manual directory
(RNNKIT_DATA_DIR/spa-eng/ when RNNKIT_DATA_DIR is set).
"""
    # The checksum registered in code instead of a checksums.tsv shared by every builder of this
    # package; the file name lets TFDS pick the archive up from the manual directory.
    url_infos: ClassVar[dict] = {URL: tfds.core.download.checksums.UrlInfo(
        size=tfds.core.utils.Size(SIZE), checksum=SHA256, filename=ARCHIVE)}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Spanish sentences ('es') and their English translations ('en').",
            features=tfds.features.FeaturesDict({
                "es": tfds.features.Text(),
                "en": tfds.features.Text(),
            }),
            supervised_keys=("es", "en"),
            homepage="https://www.manythings.org/anki/",
            citation="Tatoeba (tatoeba.org), CC-BY 2.0 (France); pairs by www.manythings.org/anki",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        archive = Path(dl_manager.download(URL))
        pairs = read_pairs(archive)
        by_split: dict[str, list[tuple[int, str, str]]] = {s: [] for s in SPLIT_PERCENT}
        for index, (spanish, english) in enumerate(pairs):
            by_split[split_of(spanish)].append((index, spanish, english))
        log.info("spa_eng: %s", {s: len(v) for s, v in by_split.items()})
        return {split: self._generate_examples(items) for split, items in by_split.items()}

    def _generate_examples(self, items: list[tuple[int, str, str]]
                           ) -> Iterator[tuple[int, dict[str, str]]]:
        for index, spanish, english in items:
            yield index, {"es": spanish, "en": english}


def manual_dir() -> Path | None:
    """RNNKIT_DATA_DIR/spa-eng when it holds the archive, else None (download)."""
    root = data_dir()
    if root and (root / "spa-eng" / ARCHIVE).is_file():
        return root / "spa-eng"
    return None


def builder() -> SpaEng:
    """The spa_eng builder on the project's TFDS cache (pipelines.config.tfds_dir())."""
    return SpaEng(data_dir=str(tfds_dir()))


def prepare() -> SpaEng:
    """Prepare spa_eng into the TFDS cache once (later calls reuse it); returns the builder."""
    with preparation_lock("spa_eng"):  # the builder is made inside: it reads what is on disk
        return _prepare()


def _prepare() -> SpaEng:
    pairs = builder()
    manual = manual_dir()
    config = tfds.download.DownloadConfig(manual_dir=str(manual) if manual else None)
    root = data_dir()
    missing = f"{root}/spa-eng/{ARCHIVE} does not exist and " if root else ""
    if not manual and not pairs.is_prepared() and not downloads.reachable(URL):
        # TFDS would retry the download for minutes (and past a Ctrl-C) before giving up.
        raise DataUnavailable(f"cannot get {ARCHIVE}: {missing}{URL} is not reachable",
                              f"connect to the internet, or put {ARCHIVE} into "
                              "RNNKIT_DATA_DIR/spa-eng/ and set RNNKIT_DATA_DIR")
    try:
        pairs.download_and_prepare(download_config=config)
    except NonMatchingChecksumError:
        raise UserError(f"{manual / ARCHIVE if manual else URL} does not have the "
                        f"registered checksum (sha256 {SHA256[:12]}…, {SIZE} bytes)",
                        f"replace it with an unchanged copy of {URL}") from None
    except (OSError, ConnectionError) as err:
        raise DataUnavailable(f"cannot get {ARCHIVE}: {missing}downloading {URL} failed ({err})",
                        f"connect to the internet, or put {ARCHIVE} into "
                        "RNNKIT_DATA_DIR/spa-eng/ and set RNNKIT_DATA_DIR") from None
    return pairs


def named_dataset() -> Any:
    """The `spa_eng` entry of pipelines.datasets.data_files.NAMED_DATASETS: `seq2seq --data spa_eng`
    reads the pairs as {"es", "en"} rows (Spanish source, English target), like a user's file,
    in the splits' stored order."""
    from pipelines.datasets.data_files import NamedDataset

    def rows(split: str, columns: Any = ("es", "en")) -> Iterator[tuple[int, dict[str, str]]]:
        unknown = [c for c in columns if c not in ("es", "en")]
        if unknown:
            raise UserError(f"data set spa_eng has no column {unknown[0]!r}; its columns are "
                            "'es', 'en'",
                            "drop --source-column/--target-column for Spanish to English, or "
                            "pass --source-column en --target-column es for the reverse")
        data = prepare().as_dataset(split=split, shuffle_files=False)
        for number, example in enumerate(data.as_numpy_iterator(), start=1):
            yield number, {c: example[c].decode("utf-8") for c in columns}

    return NamedDataset(name="spa_eng", kind="seq2seq",
                        columns={"source_column": "es", "target_column": "en"},
                        splits=("train", "validation", "test"), rows=rows,
                        description="Anki/Tatoeba Spanish -> English pairs (about 107k / 6k / 6k)")
