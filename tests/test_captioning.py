"""Image captioning on the real Flickr8k mirror: builder, overfit via the shared trainer, export."""

from __future__ import annotations

import html
import zipfile

import pytest
import tensorflow as tf

from app.cli import main
from pipelines.captioning import (
    CaptioningTask,
    bleu_scores,
    build_vocabulary,
    most_frequent_caption,
    normalize,
    split_captions,
)
from pipelines.trainer import train
from serving.export import export_run

IMAGES = 4


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
    from pipelines import flickr8k

    present, lists, tokens = _zip_listing(shared_data)
    builder = flickr8k.prepare()
    counts = {s: info.num_examples for s, info in builder.info.splits.items()}
    assert counts == {s: len(set(names) & present) for s, names in lists.items()}
    assert counts == {"train": 753, "validation": 113, "test": 125}  # README.md of the mirror
    first_caption = {}
    for line in tokens:
        key, _, caption = line.partition("\t")
        if key.endswith("#0"):
            first_caption[key[:-2]] = caption
    for split, names in lists.items():
        examples = list(builder.as_dataset(split=split).as_numpy_iterator())
        ids = [ex["image_id"].decode() + ".jpg" for ex in examples]
        assert set(ids) <= present and set(ids) <= set(names) and len(set(ids)) == len(ids)
        assert all(ex["captions"].shape == (5,) for ex in examples)
        assert all(ex["image"].ndim == 3 and ex["image"].shape[-1] == 3 for ex in examples[:5])
        assert all(ex["captions"][0].decode() == first_caption[i] for ex, i in zip(
            examples, ids, strict=True))


def test_bleu_vocabulary_and_baseline_helpers():
    refs = [["a dog runs on the grass", "a brown dog runs", "the dog is running", "a dog",
             "dog on grass"]]
    assert bleu_scores(["a dog runs on the grass"], refs)["bleu_4"] == 1.0
    assert bleu_scores(["cat sleeps inside today"], refs)["bleu_1"] == 0.0
    # 3 of 4 unigrams match, brevity penalty 1 (the closest reference length is 4).
    assert bleu_scores(["a dog runs fast"], refs)["bleu_1"] == pytest.approx(0.75)
    assert most_frequent_caption(["b c", "a b", "b c", "a b", "z"]) == "a b"
    vocab = build_vocabulary(["a dog", "a cat", "a dog runs"], vocab_size=10, min_count=2)
    assert vocab == ["", "[UNK]", "<start>", "<end>", "a", "dog"]
    assert normalize(["A Dog's  toy, red!"]) == ["a dogs toy red"]


class OverfitCaptioning(CaptioningTask):
    """Validates on the training images themselves, so the best checkpoint is the most overfit."""

    def datasets(self, config):
        train_data, _ = super().datasets(config)
        return train_data, train_data


@pytest.fixture(scope="module")
def trained(shared_data, tfds_dir, tmp_path_factory):
    """A small captioner trained through the shared trainer until it knows four images' captions."""
    task = OverfitCaptioning()
    config = task.config("quick", [
        f"max_train_examples={IMAGES}", f"batch_size={IMAGES}", f"max_eval_examples={IMAGES}",
        "epochs=45", "early_stopping_patience=45", "learning_rate=0.01", "augment=false",
        "dropout=0", "attention=false", "image_size=64", "units=256", "embed_dim=32",
        "min_word_count=1", "beam_width=3",
        # The encoder changes fast at this learning rate; quick BatchNorm statistics keep up.
        "encoder_bn_momentum=0.5"])
    result = train(task, config, tmp_path_factory.mktemp("runs") / "captioning")
    images = split_captions("train", IMAGES)
    return task, config, result, images


def test_overfit_reproduces_training_captions(trained):
    task, config, result, images = trained
    captions = task.caption_images(result.model, config, [jpeg for _, jpeg, _ in images])
    for (image_id, _, references), caption in zip(images, captions, strict=True):
        assert caption in normalize(references), (image_id, caption)
    assert len(set(captions)) == IMAGES  # each image gets its own caption, not a shared one


def test_evaluate_reports_bleu_against_baseline_and_writes_gallery(trained):
    task, config, result, _ = trained
    report = task.evaluate(result.model, config, result.run_dir)
    assert report["test_images"] == IMAGES
    for n in range(1, 5):
        assert 0.0 <= report[f"bleu_{n}"] <= 1.0 and 0.0 <= report["baseline"][f"bleu_{n}"] <= 1.0
    training = normalize([c for _, _, caps in split_captions("train", IMAGES) for c in caps])
    assert report["baseline"]["caption"] in training
    page = (result.run_dir / "gallery.html").read_text()
    assert page.count("data:image/jpeg;base64,") == IMAGES
    first_test_reference = split_captions("test", 1)[0][2][0]
    assert html.escape(first_test_reference) in page


def test_export_serves_the_same_captions_for_jpeg_and_png(trained, tmp_path):
    task, config, result, images = trained
    path = export_run(task, result.run_dir, tmp_path / "exports")
    assert path.parent.name == "captioner" and (path / "assets.extra").is_dir()
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    jpeg = images[0][1]
    png = tf.io.encode_png(tf.io.decode_jpeg(jpeg)).numpy()
    assert png.startswith(b"\x89PNG")
    served = serve(image_bytes=tf.constant([jpeg, png, images[1][1]]))["caption"].numpy()
    expected = task.caption_images(result.model, config, [jpeg, images[1][1]])
    assert [c.decode() for c in served] == [expected[0], expected[0], expected[1]]


def test_caption_command_reports_unreachable_server_in_one_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy())
    assert main(["caption", str(image), "--server", "127.0.0.1:9", "--timeout", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit: error:") and "127.0.0.1:9" in err and "\n" not in err
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["caption", str(tmp_path / "notes.txt")]) == 2
    assert "not a JPEG, PNG" in capsys.readouterr().err


def test_encoder_loads_a_users_weights_file_and_rejects_a_missing_one(tmp_path):
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
