"""Flickr8k (images with five captions each) as a tensorflow-datasets builder read from manual data.

The original hosts require registration, so the two archives are always read from a manual
directory: `RNNKIT_DATA_DIR/flickr8k/` when set, else TFDS's default `manual_dir`. Captions of
images missing from the image archive are dropped, so the same builder works on the full set
(8,091 images, 6000/1000/1000) and on any subset of it (an older mirror held 1,000). The prepared
data remembers the archives' SHA-256; when the archives change, `prepare` builds it again.

`named_dataset()` registers it for `--data flickr8k`: rows of (image id, caption), the images
from the prepared data.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import tensorflow_datasets as tfds

from pipelines.config import data_dir, tfds_dir
from pipelines.datasets import preparation_lock
from pipelines.datasets.data_files import NamedDataset, Row
from serving.errors import DataUnavailable

log = logging.getLogger("pipelines.datasets.flickr8k")

IMAGES_ZIP = "Flickr8k_Dataset.zip"
TEXT_ZIP = "Flickr8k_text.zip"
CAPTIONS_FILE = "Flickr8k.token.txt"
# TFDS split name -> the official image list in Flickr8k_text.zip.
SPLIT_LISTS = {
    "train": "Flickr_8k.trainImages.txt",
    "validation": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
CAPTIONS_PER_IMAGE = 5


def read_captions(text_zip: Path) -> dict[str, list[str]]:
    """Map each image file name to its captions, ordered by their `#n` index.

    Args:
        text_zip: Flickr8k_text.zip.
    """
    numbered: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    with zipfile.ZipFile(text_zip) as archive:
        text = archive.read(CAPTIONS_FILE).decode("utf-8")
    for line in text.splitlines():
        key, sep, caption = line.partition("\t")
        name, hash_sign, index = key.partition("#")
        if not sep or not hash_sign or not index.isdigit():
            continue
        numbered[name].append((int(index), caption.strip()))
    return {name: [c for _, c in sorted(items)] for name, items in numbered.items()}


def read_split_lists(text_zip: Path) -> dict[str, list[str]]:
    """Map each TFDS split name to the image file names of its official list.

    Args:
        text_zip: Flickr8k_text.zip.
    """
    with zipfile.ZipFile(text_zip) as archive:
        return {split: archive.read(member).decode("utf-8").split()
                for split, member in SPLIT_LISTS.items()}


def image_members(images_zip: Path) -> dict[str, str]:
    """Map each image file name in the image archive to its member path.

    Args:
        images_zip: Flickr8k_Dataset.zip (the full set or a subset, `Flicker8k_Dataset/<id>.jpg`).
    """
    with zipfile.ZipFile(images_zip) as archive:
        names = archive.namelist()
    # macOS resource forks (__MACOSX/._x.jpg) share the name but are not images.
    return {Path(n).name: n for n in names
            if n.lower().endswith(".jpg") and not Path(n).name.startswith("._")}


class Flickr8k(tfds.core.GeneratorBasedBuilder):
    """Flickr8k: 8,091 Flickr images, five English captions each, official 6k/1k/1k splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Images kept as JPEG bytes, five raw captions, official splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Flickr8k is distributed after a request form (Hodosh, Young & Hockenmaier, JAIR 2013, research
use only). Put the two archives, unchanged, into the manual directory
(RNNKIT_DATA_DIR/flickr8k/ when RNNKIT_DATA_DIR is set):
  {IMAGES_ZIP}  (the images, folder Flicker8k_Dataset/)
  {TEXT_ZIP}     (Flickr8k.token.txt and the Flickr_8k.{{train,dev,test}}Images.txt lists)
A subset of the images works too: captions of missing images are skipped.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Flickr8k image captions; only images present in the archive are kept.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "image_id": tfds.features.Text(),
                "captions": tfds.features.Sequence(tfds.features.Text(),
                                                   length=CAPTIONS_PER_IMAGE),
            }),
            supervised_keys=None,
            homepage="https://hockenmaier.cs.illinois.edu/8k-pictures.html",
            citation="""@article{hodosh2013framing,
  title={Framing image description as a ranking task: data, models and evaluation metrics},
  author={Hodosh, Micah and Young, Peter and Hockenmaier, Julia},
  journal={Journal of Artificial Intelligence Research}, volume={47}, pages={853--899},
  year={2013}}""",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        manual = Path(dl_manager.manual_dir)
        images_zip, text_zip = manual / IMAGES_ZIP, manual / TEXT_ZIP
        missing = [p.name for p in (images_zip, text_zip) if not p.is_file()]
        if missing:
            raise DataUnavailable(f"Flickr8k archives {missing} not found in {manual}",
                            self.MANUAL_DOWNLOAD_INSTRUCTIONS.replace("\n", " "))
        captions = read_captions(text_zip)
        members = image_members(images_zip)
        generators = {}
        for split, names in read_split_lists(text_zip).items():
            kept = [n for n in names if n in members
                    and len(captions.get(n, ())) == CAPTIONS_PER_IMAGE]
            log.info("flickr8k %s: %d of %d listed images found", split, len(kept), len(names))
            if not kept:  # TFDS cannot write an empty split; a subset may lack one
                continue
            generators[split] = self._generate_examples(
                images_zip=images_zip, members=members,
                items=[(n, captions[n]) for n in kept])
        return generators

    def _generate_examples(self, images_zip: Path, members: dict[str, str],
                           items: list[tuple[str, list[str]]]):
        with zipfile.ZipFile(images_zip) as archive:
            for name, captions in items:
                yield name, {"image": archive.read(members[name]),
                             "image_id": name.removesuffix(".jpg"),
                             "captions": captions}


def manual_dir() -> Path | None:
    """RNNKIT_DATA_DIR/flickr8k, or None to use TFDS's default manual directory."""
    root = data_dir()
    return root / "flickr8k" if root else None


def builder() -> Flickr8k:
    """The Flickr8k builder on the project's TFDS cache (pipelines.config.tfds_dir())."""
    return Flickr8k(data_dir=str(tfds_dir()))


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archives_digest(manual: Path) -> str | None:
    """One digest of both archives in a manual directory; None when one is missing.

    Args:
        manual: the folder holding Flickr8k_Dataset.zip and Flickr8k_text.zip.
    """
    paths = [manual / IMAGES_ZIP, manual / TEXT_ZIP]
    if not all(p.is_file() for p in paths):
        return None
    return hashlib.sha256("".join(
        _sha256(p, p.stat().st_size, p.stat().st_mtime_ns) for p in paths).encode()).hexdigest()


def prepare() -> Flickr8k:
    """Prepare Flickr8k into the TFDS cache once (later calls reuse it); returns the builder.

    Data prepared from other archives (say the old 1,000-image subset) is removed and prepared
    again from the ones now in the manual directory.
    """
    with preparation_lock("flickr8k"):  # the builder is made inside: it reads what is on disk
        return _prepare()


def _prepare() -> Flickr8k:
    flickr = builder()
    manual = manual_dir() or Path(tfds.download.DownloadConfig().manual_dir or
                                  Path(tfds_dir()) / "downloads" / "manual")
    digest = archives_digest(manual)
    stamp = Path(flickr.data_dir) / "rnnkit_source.json"
    if flickr.is_prepared() and digest is not None:
        known = json.loads(stamp.read_text()).get("archives_sha256") if stamp.exists() else None
        if known != digest:
            log.info("flickr8k: the archives in %s changed since it was prepared; preparing "
                     "it again", manual)
            shutil.rmtree(flickr.data_dir)
            flickr = builder()
    if not flickr.is_prepared():
        config = tfds.download.DownloadConfig(manual_dir=str(manual))
        flickr.download_and_prepare(download_config=config)
        if digest is not None:
            tmp = stamp.with_suffix(".tmp")
            tmp.write_text(json.dumps({"archives_sha256": digest}))
            tmp.replace(stamp)
    return flickr


def examples(split: str) -> Iterator[dict]:
    """The prepared split's examples as NumPy: {"image": JPEG bytes, "image_id", "captions"}.

    Args:
        split: train, validation or test.
    """
    return prepare().as_dataset(split=split, shuffle_files=False, decoders={
        "image": tfds.decode.SkipDecoding()}).as_numpy_iterator()


def _rows(split: str, columns: Sequence[str]) -> Iterator[tuple[int, Row]]:
    """(caption number, {image column: image id, caption column: caption}) of a split."""
    image_column, caption_column = columns
    line = 0
    for ex in examples(split):
        for caption in ex["captions"]:
            line += 1
            yield line, {image_column: ex["image_id"].decode(),
                         caption_column: caption.decode()}


def split_images(split: str) -> dict[str, bytes]:
    """{image id: JPEG bytes} of every image of a prepared split.

    Args:
        split: train, validation or test.
    """
    return {ex["image_id"].decode(): ex["image"] for ex in examples(split)}


def named_dataset() -> NamedDataset:
    """Flickr8k as `--data flickr8k`: (image, caption) rows, five per image, images included."""
    return NamedDataset(
        name="flickr8k", kind="caption",
        columns={"image_column": "image", "caption_column": "caption"},
        splits=("train", "validation", "test"), rows=_rows, images=split_images,
        description="Flickr8k: 8,091 images with five captions each (6000/1000/1000)")
