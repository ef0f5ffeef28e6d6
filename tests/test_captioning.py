"""Image captioning on the real Flickr8k mirror: builder, feature cache, overfit via the shared
trainer with the mirrored ImageNet encoder, evaluation, export, the generic `caption` task."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import shutil
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app.cli import main
from pipelines.tasks.captioning import (
    CaptioningTask,
    CaptionTask,
    bleu_scores,
    build_vocabulary,
    caption_examples,
    most_frequent_caption,
    normalize,
    split_captions,
)
from pipelines.training.export import export_run
from pipelines.training.trainer import train
from serving.errors import UserError

IMAGES = 4
# Small encoder input: a 3 x 3 feature grid, enough to tell four images apart, fast to cache.
OVERFIT = [
    f"max_train_examples={IMAGES}", f"batch_size={IMAGES}", f"max_eval_examples={IMAGES}",
    "epochs=60", "early_stopping_patience=60", "learning_rate=0.01", "lr_decay=1.0",
    "dropout=0", "image_size=96", "units=256", "embed_dim=32", "min_word_count=1",
    "beam_width=3", "attention_samples=2", "gallery_size=4", "attention_regularization=0"]


def _zip_listing(shared_data):
    """Image names in the images archive and the official split lists, read independently."""
    folder = shared_data / "flickr8k"
    with zipfile.ZipFile(folder / "Flickr8k_Dataset.zip") as images:
        present = {n.rsplit("/", 1)[-1] for n in images.namelist() if n.endswith(".jpg")}
    with zipfile.ZipFile(folder / "Flickr8k_text.zip") as text:
        lists = {split: text.read(f"Flickr_8k.{name}Images.txt").decode().split()
                 for split, name in (("train", "train"), ("validation", "dev"), ("test", "test"))}
        tokens = text.read("Flickr8k.token.txt").decode().splitlines()
    return present, lists, tokens


def test_builder_keeps_exactly_the_mirrored_images_with_five_captions(shared_data, tfds_dir):
    from pipelines.datasets import flickr8k

    present, lists, tokens = _zip_listing(shared_data)
    builder = flickr8k.prepare()
    counts = {s: info.num_examples for s, info in builder.info.splits.items()}
    assert counts == {s: len(set(names) & present) for s, names in lists.items()}
    assert counts == {"train": 6000, "validation": 1000, "test": 1000}  # README.md of the mirror
    first_caption = {}
    for line in tokens:
        key, _, caption = line.partition("\t")
        if key.endswith("#0"):
            first_caption[key[:-2]] = caption
    for split, names in lists.items():
        examples = list(builder.as_dataset(split=split).take(200).as_numpy_iterator())
        ids = [ex["image_id"].decode() + ".jpg" for ex in examples]
        assert set(ids) <= present and set(ids) <= set(names) and len(set(ids)) == len(ids)
        assert all(ex["captions"].shape == (5,) for ex in examples)
        assert all(ex["image"].ndim == 3 and ex["image"].shape[-1] == 3 for ex in examples[:5])
        assert all(ex["captions"][0].decode() == first_caption[i] for ex, i in zip(
            examples, ids, strict=True))


def test_builder_prepares_a_subset_and_again_when_the_archive_changes(shared_data, tmp_path,
                                                                      monkeypatch):
    """The old 1,000-image mirror still works, and replacing the archive re-prepares it."""
    from pipelines.datasets import flickr8k

    present, lists, _ = _zip_listing(shared_data)
    manual = tmp_path / "data" / "flickr8k"
    manual.mkdir(parents=True)
    shutil.copy(shared_data / "flickr8k" / "Flickr8k_text.zip", manual)
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / "tfds"))

    def subset(count):
        """The first `count` image ids in sorted order, as the old mirror held them."""
        kept = sorted(present)[:count]
        with zipfile.ZipFile(shared_data / "flickr8k" / "Flickr8k_Dataset.zip") as full, \
                zipfile.ZipFile(manual / "Flickr8k_Dataset.zip", "w") as small:
            for name in kept:
                small.writestr(f"Flicker8k_Dataset/{name}", full.read(
                    f"Flicker8k_Dataset/{name}"))
        counts = {s: len(set(names) & set(kept)) for s, names in lists.items()}
        return {s: n for s, n in counts.items() if n}  # a split without images is left out

    expected = subset(40)
    counts = {s: i.num_examples for s, i in flickr8k.prepare().info.splits.items()}
    assert counts == expected and sum(counts.values()) > 0
    expected = subset(70)
    assert expected != counts
    counts = {s: i.num_examples for s, i in flickr8k.prepare().info.splits.items()}
    assert counts == expected


def test_bleu_vocabulary_and_baseline_helpers():
    refs = [["a dog runs on the grass", "a brown dog runs", "the dog is running", "a dog",
             "dog on grass"]]
    assert bleu_scores(["a dog runs on the grass"], refs)["bleu_4"] == 1.0
    assert bleu_scores(["cat sleeps inside today"], refs)["bleu_1"] == 0.0
    # 3 of 4 unigrams match, brevity penalty 1 (the closest reference length is 4).
    assert bleu_scores(["a dog runs fast"], refs)["bleu_1"] == pytest.approx(0.75)
    # Images may have different numbers of references.
    assert bleu_scores(["a dog", "a red ball"], [["a dog", "dogs"], ["a red ball"]])[
        "bleu_1"] == 1.0
    assert most_frequent_caption(["b c", "a b", "b c", "a b", "z"]) == "a b"
    vocab = build_vocabulary(["a dog", "a cat", "a dog runs"], vocab_size=10, min_count=2)
    assert vocab == ["", "[UNK]", "<start>", "<end>", "a", "dog"]
    assert normalize(["A Dog's  toy, red!"]) == ["a dogs toy red"]


def test_caption_examples_group_and_pad_captions_per_image():
    vocab = ["", "[UNK]", "<start>", "<end>", "a", "dog", "cat"]
    images, ids = caption_examples([["a dog", "a cat", "dog"], ["cat"]], vocab, length=3,
                                   per_image=2)
    assert images.tolist() == [0, 0, 1]
    assert ids.shape == (3, 2, 5)
    assert ids[0, 0].tolist() == [2, 4, 5, 3, 0] and ids[0, 1].tolist() == [2, 4, 6, 3, 0]
    assert ids[1, 0].tolist() == [2, 5, 3, 0, 0] and not ids[1, 1].any()
    assert ids[2, 0].tolist() == [2, 6, 3, 0, 0] and not ids[2, 1].any()


class OverfitCaptioning(CaptioningTask):
    """Validates on the training images themselves, so the best checkpoint is the most overfit."""

    def datasets(self, config):
        train_data, _ = super().datasets(config)
        return train_data, train_data


@pytest.fixture(scope="module")
def trained(shared_data, tfds_dir, tmp_path_factory):
    """A decoder on the frozen, mirrored ImageNet encoder, trained until it knows four images."""
    task = OverfitCaptioning()
    config = task.config("quick", OVERFIT)
    assert config.encoder_weights == "imagenet" and config.trainable_encoder_blocks == 0
    result = train(task, config, tmp_path_factory.mktemp("runs") / "captioning")
    # The first four training images by id: the same in the 1,000-image and the full archive.
    images = split_captions("train", IMAGES)
    return task, config, result, images


def test_first_training_images_are_picked_by_id(trained):
    _, _, _, images = trained
    ids = [image_id for image_id, _, _ in images]
    assert ids == sorted(ids) and ids[0] == "1000268201_693b08cb0e"


def test_overfit_reproduces_training_captions(trained):
    task, config, result, images = trained
    assert "imagenet" in result.model.encoder_weights  # the mirror's file, resolved
    assert not result.model.encoder.trainable
    captions = task.caption_images(result.model, config, [jpeg for _, jpeg, _ in images])
    for (image_id, _, references), caption in zip(images, captions, strict=True):
        assert caption in normalize(references), (image_id, caption)
    assert len(set(captions)) == IMAGES  # each image gets its own caption, not a shared one


def test_evaluate_reports_bleu_cider_against_baseline_and_draws_attention(trained):
    task, config, result, _ = trained
    report = task.evaluate(result.model, config, result.run_dir)
    assert report["test_images"] == IMAGES
    for n in range(1, 5):
        assert 0.0 <= report[f"bleu_{n}"] <= 1.0 and 0.0 <= report["baseline"][f"bleu_{n}"] <= 1.0
    assert report["cider_d"] is not None and report["baseline"]["cider_d"] is not None
    assert report["distinct_fraction"] == report["distinct_captions"] / IMAGES
    training = normalize([c for _, _, caps in split_captions("train", IMAGES) for c in caps])
    assert report["baseline"]["caption"] in training
    page = (result.run_dir / "gallery.html").read_text()
    assert page.count("data:image/jpeg;base64,") == IMAGES
    first_test_reference = split_captions("test", 1)[0][2][0]
    assert html.escape(first_test_reference) in page
    assert len(report["attention_maps"]) == 2
    for path in report["attention_maps"]:
        with open(path, "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attention_maps_are_the_weights_decoding_used(trained):
    """Teacher forcing the generated words gives each step's attention, summing to one."""
    _, _, result, images = trained
    model = result.model
    out = model.caption_with_attention(tf.constant([images[0][1]]), beam_width=1)
    words = [w.decode() for w in out["output_tokens"][0].numpy() if w]
    assert " ".join(words) == out["caption"][0].numpy().decode()
    maps = out["attention"][0].numpy()
    assert maps.shape[1:] == (3, 3)
    np.testing.assert_allclose(maps[:len(words)].sum(axis=(1, 2)), 1.0, rtol=1e-4)
    assert not maps[len(words):].any()


def test_export_serves_the_same_captions_for_jpeg_and_png(trained, tmp_path):
    task, config, result, images = trained
    path = export_run(task, result.run_dir, tmp_path / "exports")
    assert path.parent.name == "captioner" and (path / "assets.extra").is_dir()
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    jpeg = images[0][1]
    png = tf.io.encode_png(tf.io.decode_jpeg(jpeg)).numpy()
    assert png.startswith(b"\x89PNG")
    served = serve(image_bytes=tf.constant([jpeg, png, images[1][1]]))
    expected = task.caption_images(result.model, config, [jpeg, images[1][1]])
    assert [c.decode() for c in served["caption"].numpy()] == [expected[0], expected[0],
                                                             expected[1]]
    assert served["output_text"].numpy().tolist() == served["caption"].numpy().tolist()
    attention = loaded.signatures["caption_with_attention"](image_bytes=tf.constant([jpeg]))
    assert attention["caption"].numpy()[0].decode() == expected[0]
    assert attention["attention"].shape[-2:] == (3, 3)
    # An empty batch answers an empty batch (TensorFlow's oneDNN Conv2D on AVX-512 CPUs
    # answered it with its input's shape, and the encoder's next layer failed).
    assert serve(image_bytes=tf.constant([], tf.string))["caption"].shape == (0,)
    empty = loaded.signatures["caption_with_attention"](image_bytes=tf.constant([], tf.string))
    assert empty["caption"].shape == (0,) and empty["attention"].shape[0] == 0
    # Bytes that are no image: INVALID_ARGUMENT (HTTP 400) saying which formats it takes.
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        serve(image_bytes=tf.constant([b"these are not image bytes"]))
    # A 16,000 x 16,000 PNG (768 MB decoded) is refused from its header, before decoding.
    started = time.monotonic()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"\[16000\] \[x\] \[16000\] \[pixels, more than the limit "
                             r"of 40,000,000"):
        serve(image_bytes=tf.constant([_png_header(16000, 16000)]))
    assert time.monotonic() - started < 1.0
    meta = json.loads((path / "assets.extra" / "rnnkit_export.json").read_text())
    assert meta["max_image_pixels"] == 40_000_000


def _png_header(width, height):
    """The start of a PNG file whose IHDR chunk says width x height (RGB, 8 bits)."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
            + struct.pack(">I", zlib.crc32(ihdr)) + b"\x00" * 64)


def test_image_sizes_are_read_from_headers_of_every_format():
    from models.captioning import image_size_from_header

    for fmt in ("JPEG", "PNG", "GIF", "BMP"):
        buffer = io.BytesIO()
        Image.new("RGB", (37, 21), (10, 200, 30)).save(buffer, fmt)
        assert image_size_from_header(tf.constant(buffer.getvalue())).numpy().tolist() == [21, 37]
    assert image_size_from_header(tf.constant(_png_header(16000, 9000))).numpy().tolist() == [
        9000, 16000]
    assert image_size_from_header(tf.constant(b"GIF8")).numpy().tolist() == [0, 0]


def test_caption_command_reports_unreachable_server_in_one_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy())
    assert main(["caption", str(image), "--server", "127.0.0.1:9", "--timeout", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit: error:") and "127.0.0.1:9" in err and "\n" not in err
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["caption", str(tmp_path / "notes.txt")]) == 2
    assert "not a JPEG, PNG" in capsys.readouterr().err


def test_encoder_loads_a_users_weights_file_and_names_a_mismatch(tmp_path):
    from models.captioning import build_encoder

    trained = build_encoder("mobilenet_v2", 64, 0.35, "none")
    trained.set_weights([w + 0.5 for w in trained.get_weights()])
    path = tmp_path / "encoder.weights.h5"
    trained.save_weights(path)
    loaded = build_encoder("mobilenet_v2", 64, 0.35, str(path))
    assert all((a == b).all() for a, b in zip(trained.get_weights(), loaded.get_weights(),
                                              strict=True))
    with pytest.raises(ValueError, match="does not exist"):
        build_encoder("mobilenet_v2", 64, 0.35, str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match=r"do not fit mobilenet_v2 alpha=1.0: the file holds "
                                         r"weights of mobilenet_v2 alpha=0.35"):
        build_encoder("mobilenet_v2", 64, 1.0, str(path))


def test_random_encoder_is_the_same_for_the_same_seed():
    from models.captioning import build_encoder
    from pipelines.datasets.feature_cache import weights_digest

    a, b = (build_encoder("mobilenet_v2", 32, 0.35, "none", seed=3) for _ in range(2))
    c = build_encoder("mobilenet_v2", 32, 0.35, "none", seed=4)
    assert weights_digest(a) == weights_digest(b) != weights_digest(c)


def test_train_command_names_a_weights_file_that_does_not_fit(shared_data, tmp_path, capsys):
    weights = shared_data / "imagenet" / "mobilenet_v2_1.0_imagenet_from_int8tflite_no_top" \
                                         ".weights.h5"
    code = main(["train", "captioning", "--run-dir", str(tmp_path / "run"), "--set",
                 "encoder_alpha=0.5", "--set", f"encoder_weights={weights}"])
    err = capsys.readouterr().err
    assert code == 2 and "mobilenet_v2 alpha=1.0" in err and "alpha=0.5" in err
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        err.splitlines()[-1]] and "Traceback" not in err and "Warning" not in err


# -- the feature cache ----------------------------------------------------------------------

def _images(count, size=40):
    """Distinct small PNGs as (id, reader) pairs."""
    out = []
    for k in range(count):
        pixels = tf.fill([size, size, 3], tf.constant(k * 40, tf.uint8))
        data = tf.io.encode_png(pixels).numpy()
        out.append((f"img{k}", lambda data=data: data))
    return out


def _cache(root, images, key=None, fingerprint="f1", calls=None, max_skipped=0.5):
    from models.captioning import decode_and_resize
    from pipelines.datasets import feature_cache

    key = key or feature_cache.EncoderKey("toy", 1.0, 16, "0" * 64)

    def extract(pixels):
        if calls is not None:
            calls.append(len(pixels))
        mean = tf.reduce_mean(tf.cast(pixels, tf.float32), axis=[1, 2, 3])
        return tf.tile(mean[:, None, None, None], [1, 2, 2, 3])

    return feature_cache.cached_features(root, key, "set", images, extract, decode_and_resize,
                                         fingerprint, batch_size=2,
                                         max_skipped_fraction=max_skipped)


def test_feature_cache_computes_once_and_rebuilds_when_a_key_changes(tmp_path):
    from pipelines.datasets import feature_cache

    calls = []
    first = _cache(tmp_path, _images(3), calls=calls)
    assert first.ids == ["img0", "img1", "img2"] and first.features.shape == (3, 2, 2, 3)
    np.testing.assert_allclose(first.features[:, 0, 0, 0], [0, 40, 80])
    assert _cache(tmp_path, _images(3), calls=calls).path == first.path and len(calls) == 2
    # Another image set (fingerprint) is rebuilt; another encoder, size or weights digest is
    # another folder.
    _cache(tmp_path, _images(3), fingerprint="f2", calls=calls)
    assert len(calls) == 4
    other = feature_cache.EncoderKey("toy", 1.0, 16, "1" * 64)
    assert _cache(tmp_path, _images(3), key=other, calls=calls).path != first.path
    assert len(calls) == 6


def test_feature_cache_never_reads_a_half_written_or_damaged_cache(tmp_path, caplog):
    calls = []
    first = _cache(tmp_path, _images(3), calls=calls)
    # A run killed while writing leaves only a temporary folder, which is never read.
    leftover = first.path.parent / ".set.tmp-1-dead"
    shutil.copytree(first.path, leftover)
    (first.path / "meta.json").unlink()
    rebuilt = _cache(tmp_path, _images(3), calls=calls)
    assert len(calls) == 4 and rebuilt.path == first.path
    # A damaged features file is reported and rebuilt, never used.
    data = (first.path / "features.npy").read_bytes()
    (first.path / "features.npy").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="pipelines.datasets.feature_cache"):
        again = _cache(tmp_path, _images(3), calls=calls)
    assert "damaged" in caplog.text and len(calls) == 6
    np.testing.assert_allclose(again.features[:, 0, 0, 0], [0, 40, 80])
    (first.path / "meta.json").write_text("{not json")
    assert _cache(tmp_path, _images(3), calls=calls).ids == ["img0", "img1", "img2"]


def test_feature_cache_skips_and_counts_images_that_do_not_decode(tmp_path, caplog):
    from pipelines.datasets import feature_cache

    images = _images(3)
    images.insert(1, ("broken.jpg", lambda: b"not an image"))
    with caplog.at_level(logging.WARNING, logger="pipelines.datasets.feature_cache"):
        cached = _cache(tmp_path, images)
    assert cached.ids == ["img0", "img1", "img2"] and cached.skipped == ["broken.jpg"]
    assert "1 of 4 images could not be decoded" in caplog.text and "broken.jpg" in caplog.text
    np.testing.assert_allclose(cached.features[:, 0, 0, 0], [0, 40, 80])
    with pytest.raises(feature_cache.ImageDecodeError, match="2 of 3 images"):
        _cache(tmp_path / "other", [images[0], images[1], ("x.png", lambda: b"")])


# -- the generic caption task on a user's files ------------------------------------------------

@pytest.fixture(scope="module")
def caption_files(shared_data, tfds_dir, tmp_path_factory):
    """Four real Flickr8k images with their captions written as a user's CSV and folder."""
    folder = tmp_path_factory.mktemp("user_captions")
    (folder / "photos").mkdir()
    rows = []
    for image_id, jpeg, captions in split_captions("train", IMAGES):
        (folder / "photos" / f"{image_id}.jpg").write_bytes(jpeg)
        rows += [(f"{image_id}.jpg", caption) for caption in captions]
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "text"])
        writer.writerows(rows)
    return folder


def test_caption_task_trains_on_a_users_csv_evaluates_and_exports(caption_files, tmp_path,
                                                                  capsys):
    data = caption_files / "captions.csv"
    run_dir = tmp_path / "run"
    flags = ["--data", str(data), "--validation-data", str(data), "--test-data", str(data),
             "--images", str(caption_files / "photos"), "--image-column", "file",
             "--caption-column", "text", "--run-dir", str(run_dir)]
    # Two images a batch over 30 epochs: each image is seen half as often as in OVERFIT, which
    # beam search still captions exactly, in half the time (the time goes to each epoch's
    # validation and checkpoint more than to its one step).
    values = dict(s.split("=", 1) for s in OVERFIT if not s.startswith("max_"))
    values.update(batch_size="2", epochs="30", early_stopping_patience="30")
    del values["attention_samples"]
    settings = [a for key, value in values.items() for a in ("--set", f"{key}={value}")]
    assert main(["train", "caption", *flags, *settings]) == 0
    capsys.readouterr()
    assert main(["evaluate", "caption", "--run-dir", str(run_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_images"] == IMAGES
    # Trained and tested on the same four images: far above the one-caption baseline.
    assert report["bleu_4"] > report["baseline"]["bleu_4"] + 0.2
    assert report["distinct_captions"] == IMAGES
    # Another test file with its own columns and image folder: the flags describe it, and the
    # baseline still reads the training file as the run did (it was re-read with these flags).
    other_photos = tmp_path / "other_photos"
    shutil.copytree(caption_files / "photos", other_photos)
    with open(data, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    other = tmp_path / "other.csv"
    with open(other, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["caption", "image"], *[[r[1], r[0]] for r in rows[1:]]])
    assert main(["evaluate", "caption", "--run-dir", str(run_dir), "--data", str(other),
                 "--image-column", "image", "--caption-column", "caption",
                 "--images", str(other_photos)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["test_images"] == IMAGES and scored["baseline"] == report["baseline"]
    # Each scored file has its own gallery, captions and maps: the first ones are kept.
    for name in ("captions", "other"):
        assert (run_dir / f"gallery-{name}.html").is_file()
        assert (run_dir / f"test_captions-{name}.jsonl").is_file()
    assert scored["gallery"] == str(run_dir / "gallery-other.html")
    assert main(["export", "caption", "--run-dir", str(run_dir), "--base-path",
                 str(tmp_path / "exports")]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["model_name"] == "captions"  # the data file's stem
    serve = tf.saved_model.load(exported["path"]).signatures["serving_default"]
    jpeg = (caption_files / "photos" / f"{split_captions('train', 1)[0][0]}.jpg").read_bytes()
    caption = serve(image_bytes=tf.constant([jpeg]))["output_text"].numpy()[0].decode()
    assert caption in normalize(split_captions("train", 1)[0][2])


def test_caption_task_names_missing_images_and_columns(caption_files, tmp_path):
    task = CaptionTask()
    data = caption_files / "captions.csv"
    base = [f"data={data}", f"validation_data={data}", f"images={caption_files / 'photos'}",
            "image_column=file", "caption_column=text"]
    # A missing image above the threshold: an error naming it.
    with open(data, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    broken = tmp_path / "broken.csv"
    with open(broken, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([*rows, ["nowhere.jpg", "a missing photo"]])
    config = task.config("quick", [*base, f"data={broken}"])
    with pytest.raises(UserError, match=r"1 of 5 listed images are missing from "
                                        r".*photos \(nowhere.jpg\)"):
        task.part(config, "train")
    # Without --images the paths are relative to the data file's folder, and the error says so.
    config = task.config("quick", [*base, f"data={broken}", "images="])
    with pytest.raises(UserError, match=r"5 of 5 listed images are missing from .* \(the data "
                                        r"file's folder\)"):
        task.part(config, "train")
    # Below the threshold it is skipped and the rest is read.
    config = task.config("quick", [*base, f"data={broken}", "max_skipped_images=0.5"])
    assert "nowhere.jpg" not in task.part(config, "train").ids
    # Images over max_image_pixels are named as large, with their size, not as broken.
    config = task.config("quick", [*base, "max_image_pixels=1000"])
    with pytest.raises(UserError, match=r"could not be read or decoded .*; .*\.jpg is "
                                        r"\d+ x \d+ pixels.*more than max_image_pixels=1,000"):
        task.features(config, "train", None)
    with pytest.raises(UserError, match=r"picture.*file"):
        task.part(task.config("quick", [*base, "image_column=picture"]), "train")
    with pytest.raises(UserError, match="does not exist"):
        task.part(task.config("quick", [*base, f"images={tmp_path / 'none'}"]), "train")


def test_fine_tuning_trains_only_the_top_blocks_and_keeps_batchnorm_statistics():
    from models.captioning import build_encoder, set_trainable_blocks

    encoder = build_encoder("mobilenet_v2", 32, 0.35, "none")
    set_trainable_blocks(encoder, 2)
    names = {w.path.split("/")[0] for w in encoder.trainable_weights}
    assert names == {"block_15_expand", "block_15_depthwise", "block_15_project",
                     "block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}
    set_trainable_blocks(encoder, 0)
    assert not encoder.trainable_weights
    set_trainable_blocks(encoder, -1)
    assert len(encoder.trainable_weights) > 100


# The last commit before the feature cache, residual attention and feature standardisation.
OLD_CAPTIONER = "00aa393"


def test_a_captioner_saved_by_the_previous_version_loads_and_captions_the_same(tmp_path):
    """A .keras file written by the old models/captioning.py loads and decodes identically."""
    import subprocess
    import sys
    from pathlib import Path

    import keras

    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{OLD_CAPTIONER}:models/captioning.py"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    script = f"""
import sys, types
import numpy as np, tensorflow as tf
module = types.ModuleType("models.captioning")
sys.modules["models.captioning"] = module
exec(compile({source!r}, "old_captioning.py", "exec"), module.__dict__)
tf.random.set_seed(1)
model = module.Captioner(["", "[UNK]", "<start>", "<end>", "dog", "runs", "a"], image_size=32,
                         encoder_alpha=0.35, units=8, embed_dim=4, augment=False, seed=3)
model.build()
pixels = tf.cast(tf.random.uniform([2, 32, 32, 3], 0, 255, seed=5), tf.uint8)
np.save(sys.argv[2], model.generate(pixels, beam_width=2, max_length=5).numpy())
np.save(sys.argv[3], pixels.numpy())
model.save(sys.argv[1])
"""
    saved, ids, pixels = tmp_path / "old.keras", tmp_path / "ids.npy", tmp_path / "pixels.npy"
    subprocess.run([sys.executable, "-c", script, str(saved), str(ids), str(pixels)], cwd=repo,
                   check=True, capture_output=True)
    import models.captioning  # noqa: F401  (registers the current Captioner)

    loaded = keras.saving.load_model(saved)
    assert not loaded.residual_attention and not loaded.normalize_features
    assert loaded.trainable_encoder_blocks == -1
    new_ids = loaded.generate(tf.constant(np.load(pixels)), beam_width=2, max_length=5)
    np.testing.assert_array_equal(new_ids.numpy(), np.load(ids))
