"""`seq2seq` on a user's file: real spa-eng pairs written to a CSV, trained, evaluated, exported,
reloaded and asked; its bad-input errors; the `translation` preset's old run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from app.cli import main

TRAIN_PAIRS = 8000
TEST_PAIRS = 150
MAX_WORDS = 4  # short pairs: a tiny model learns them in seconds


def _json_out(capsys) -> dict:
    """The command's stdout, which must be exactly one JSON object."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _write(path: Path, rows: list[tuple[str, str]], header: tuple[str, str]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def pair_files(shared_data, tfds_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The first short spa_eng train and test pairs as a user's CSV files (real CSV quoting:
    Spanish commas and quotes), under columns the task does not default to."""
    from pipelines.datasets.spa_eng import named_dataset

    spa_eng = named_dataset()
    folder = tmp_path_factory.mktemp("pairs")

    def short(split: str, count: int) -> list[tuple[str, str]]:
        rows = []
        for _, row in spa_eng.rows(split, ("es", "en")):
            if len(row["es"].split()) <= MAX_WORDS and len(row["en"].split()) <= MAX_WORDS:
                rows.append((row["es"], row["en"]))
                if len(rows) == count:
                    break
        return rows

    return (_write(folder / "pairs.csv", short("train", TRAIN_PAIRS), ("spanish", "english")),
            _write(folder / "pairs_test.csv", short("test", TEST_PAIRS), ("spanish", "english")))


@pytest.fixture(scope="module")
def csv_run(pair_files, tmp_path_factory) -> tuple[Path, dict]:
    """A seeded quick run on the CSV, with the columns named on the command line."""
    train, test = pair_files
    run_dir = tmp_path_factory.mktemp("runs") / "seq2seq"
    code = main(["train", "seq2seq", "--data", str(train), "--test-data", str(test),
                 "--source-column", "spanish", "--target-column", "english",
                 "--run-dir", str(run_dir), "--set", "epochs=6", "--set", "batch_size=64",
                 "--set", "units=64", "--set", "embedding_dim=64", "--set", "beam_width=2",
                 "--set", "learning_rate=0.01", "--set", "early_stopping_patience=2",
                 "--set", "max_output_length=12"])
    assert code == 0
    return run_dir, json.loads((run_dir / "config.json").read_text())


def test_learns_above_the_copy_baseline_and_evaluates(csv_run, capsys) -> None:
    run_dir, config = csv_run
    assert (config["data"], config["source_column"], config["target_column"]) == (
        config["data"], "spanish", "english")
    assert main(["evaluate", "seq2seq", "--run-dir", str(run_dir)]) == 0
    result = _json_out(capsys)
    assert result["test_pairs"] == TEST_PAIRS and result["data"].endswith("pairs_test.csv")
    copy = result["copy_baseline"]
    # Copying the Spanish source scores a little (shared names, numbers, punctuation).
    assert result["bleu"] > copy["bleu"] + 5, result
    assert result["chrf"] > copy["chrf"] + 10, result
    assert {"greedy", "beam2"} <= set(result) and result["samples"][0]["output"]
    # Drawn from the --test-data file, so named after it (another scored file gets its own).
    assert result["attention_plot"] == str(run_dir / "attention-pairs_test.png")
    assert (run_dir / "attention-pairs_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exports_under_the_files_name_reloads_and_answers(csv_run, tmp_path, capsys) -> None:
    import tensorflow as tf

    run_dir, _ = csv_run
    assert main(["export", "seq2seq", "--run-dir", str(run_dir), "--base-path",
                 str(tmp_path)]) == 0
    exported = _json_out(capsys)
    assert exported["model_name"] == "pairs"  # the data file's stem
    metadata = json.loads((Path(exported["path"]) / "assets.extra" /
                           "rnnkit_export.json").read_text())
    assert (metadata["kind"], metadata["source_column"]) == ("seq2seq", "spanish")
    limit, most_texts = metadata["max_input_tokens"], metadata["max_request_texts"]
    assert (limit, most_texts) == (100, 64)  # the defaults, recorded

    loaded = tf.saved_model.load(exported["path"])
    reply = loaded.signatures["serving_default"](text=tf.constant(["Tengo hambre.", "Hola."]))
    outputs = [t.decode() for t in reply["output_text"].numpy()]
    assert outputs == [t.decode() for t in reply["translation"].numpy()]
    assert all(outputs), outputs
    attention = loaded.signatures["translate_with_attention"](text=tf.constant(["Hola."]))
    assert attention["attention"].shape[0] == 1
    # Issue 24: a 200,000-word sentence is cut to max_input_tokens inside the graph; a batch
    # beyond max_request_texts is refused with a sentence naming both numbers.
    words = "tengo hambre " * 100_000
    long = loaded.signatures["serving_default"](text=tf.constant([words]))
    cut = loaded.signatures["serving_default"](
        text=tf.constant([" ".join(words.split()[:limit])]))
    assert long["translation"].numpy().tolist() == cut["translation"].numpy().tolist()
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at most {most_texts} are read"):
        loaded.signatures["serving_default"](text=tf.constant(["Hola."] * (most_texts + 1)))

    assert main(["export", "seq2seq", "--run-dir", str(run_dir), "--base-path",
                 str(tmp_path), "--model-name", "es_en"]) == 0
    assert _json_out(capsys)["model_name"] == "es_en"
    # An empty name is refused (it silently fell back to the default).
    assert main(["export", "seq2seq", "--run-dir", str(run_dir), "--base-path",
                 str(tmp_path), "--model-name", " "]) == 2
    assert "--model-name is empty" in capsys.readouterr().err
    # Another kind of model served under that name is not replaced by this one.
    served = tmp_path / "corpus" / "3" / "assets.extra"
    served.mkdir(parents=True)
    (served / "rnnkit_export.json").write_text('{"kind": "language_model"}')
    assert main(["export", "seq2seq", "--run-dir", str(run_dir), "--base-path",
                 str(tmp_path), "--model-name", "corpus"]) == 2
    assert "holds a language_model export (version 3); this run is seq2seq" in \
        capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["3"]


@pytest.mark.parametrize(("content", "flags", "message"), [
    (None, [], "does not exist"),
    ("", [], "is empty"),
    ("source,target\nhola,hello\n", ["--target-column", "english"],
     "no column 'english'; its columns are 'source', 'target'"),
    ("source,target\n,hello\n  ,hi\n", [], "has no pairs left after dropping 2"),
    ("source,target\nhola,hello\nadiós,\n,hi\nsí,yes\n", [],
     "have an empty source or target, more than max_empty_fraction=0.1"),
    ("source,target\nhola,hello\n\"no closing quote,x\n", [], "line 3"),
    (b"source,target\nhola,hello\nmal \xff byte,x\n", [], "line 3: invalid UTF-8"),
    # Every pair longer than the limit: nothing would train (it "finished" without a model).
    ("source,target\n" + "".join(f"uno dos tres {i},one two three {i}\n" for i in range(40)),
     ["--set", "max_sentence_tokens=2"],
     "pairs are longer than max_sentence_tokens=2 tokens on a side"),
    ("source,target\nhola,hello\n", ["--set", "target_vocab_size=2"],
     "target_vocab_size=2 is too small"),
    ("source,target\nhola,hello\n", ["--set", "learning_rate=-1"],
     "learning_rate=-1.0 must be a number above 0"),
])
def test_bad_data_is_one_clear_line(tmp_path, capsys, content, flags, message) -> None:
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    code = main(["train", "seq2seq", "--data", str(path), "--run-dir", str(tmp_path / "run"),
                 "--set", "epochs=1", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error" in line]  # the rest is the log
    assert len(errors) == 1 and errors[0].startswith("rnnkit: error: "), err
    assert message in errors[0], err


def test_translation_preset_still_evaluates_and_exports_an_old_run(shared_data, tfds_dir,
                                                                  tmp_path, capsys) -> None:
    """A run dir from before seq2seq: its config.json has none of the data fields."""
    run_dir = tmp_path / "old"
    assert main(["train", "translation", "--run-dir", str(run_dir),
                 "--set", "max_train_examples=200", "--set", "max_validation_examples=20",
                 "--set", "max_eval_examples=20", "--set", "epochs=1", "--set", "units=8",
                 "--set", "embedding_dim=8", "--set", "beam_width=1"]) == 0
    capsys.readouterr()
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text())
    for field in ("data", "validation_data", "test_data", "source_column", "target_column",
                  "max_empty_fraction"):
        del config[field]
    config_file.write_text(json.dumps(config))

    assert main(["evaluate", "translation", "--run-dir", str(run_dir)]) == 0
    result = _json_out(capsys)
    assert result["test_pairs"] == 20 and result["data"] == "spa_eng (test)"
    assert main(["export", "translation", "--run-dir", str(run_dir), "--base-path",
                 str(tmp_path / "exports")]) == 0
    assert _json_out(capsys)["model_name"] == "translator"


def test_a_test_file_without_the_columns_is_refused_before_training(tmp_path, capsys) -> None:
    train = tmp_path / "pairs.csv"
    train.write_text("source,target\n" + "".join(f"hola {i},hello {i}\n" for i in range(30)),
                     encoding="utf-8")
    test = tmp_path / "other.tsv"
    test.write_text("spanish\tenglish\nhola\thello\n", encoding="utf-8")
    code = main(["train", "seq2seq", "--data", str(train), "--test-data", str(test),
                 "--run-dir", str(tmp_path / "run"), "--set", "epochs=1"])
    assert code == 2
    assert "other.tsv has no columns 'source', 'target'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
