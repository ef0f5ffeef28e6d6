"""`classify` on a user's files: a tiny seeded run on real TREC questions written to CSV (with
character features) learns well above the majority class, evaluates, exports and answers with
label names through the model server; the bag-of-words model reads JSONL.gz; every bad input is
one clear error."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re

import numpy as np
import pytest
import tensorflow as tf
from task_runs import quick_run

from app.cli import main
from pipelines.datasets import trec
from pipelines.tasks import get_task
from serving.errors import UserError
from tests.serving_harness import http, running_server

SMALL = ["epochs=4", "batch_size=32", "learning_rate=0.003", "max_tokens=3000",
         "embedding_dim=32", "units=32", "dense_units=32", "max_length=30"]


@pytest.fixture(scope="module")
def questions(shared_data, tmp_path_factory):
    """1,500 TREC training questions and 300 test questions as CSV files with their own column
    names (questions carry commas and quotes, so the writer quotes them)."""
    folder = tmp_path_factory.mktemp("questions")
    for split, limit in (("train", 1500), ("test", 300)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "kind"])
            for i, (_, row) in enumerate(trec.rows(split)):
                if i == limit:
                    break
                writer.writerow([i, row["text"], row["label"]])
    return folder


@pytest.fixture(scope="module")
def csv_run(questions, tmp_path_factory):
    return quick_run("classify", [f"data={questions / 'train.csv'}",
                                  f"test_data={questions / 'test.csv'}",
                                  "text_column=question", "label_column=kind", "cell=gru",
                                  "char_features=true",
                                  *SMALL], tmp_path_factory.mktemp("runs") / "csv")


def test_classify_learns_evaluates_and_serves_label_names(csv_run, tmp_path):
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.export import export_run

    task, _, result = csv_run
    evaluation = evaluate_run(task, result.run_dir)
    assert evaluation["n_examples"] == 300
    # Six classes, the largest about a quarter: chance-level models stay near that.
    assert evaluation["accuracy"] > evaluation["majority_baseline"] + 0.25, evaluation
    assert set(evaluation["per_class"]) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert 0 < evaluation["macro_f1"] <= 1
    assert np.sum(evaluation["confusion_matrix"]) == 300
    assert (result.run_dir / evaluation["confusion_matrix_png"]).stat().st_size > 1000

    path = export_run(task, result.run_dir, tmp_path / "exports")
    assert path == tmp_path / "exports" / "train" / "1"  # named after the data file's stem
    meta = json.loads((path / "assets.extra" / "rnnkit_export.json").read_text())
    assert meta["kind"] == "classify" and len(meta["classes"]) == 6
    texts = ["How many miles is it from London to Paris ?", "Who wrote Hamlet ?",
             "Where is the Eiffel Tower ?"]
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](text=tf.constant(texts))
    probabilities = out["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(out["probability"].numpy(), probabilities.max(axis=1), atol=1e-6)
    labels = [label.decode() for label in out["label"].numpy()]
    assert labels == [meta["classes"][i] for i in probabilities.argmax(axis=1)]
    classified = loaded.signatures["classify"](inputs=tf.constant([
        tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString()
        for t in texts]))
    assert [c.decode() for c in classified["classes"].numpy()[0]] == meta["classes"]
    np.testing.assert_allclose(classified["scores"].numpy(), probabilities, atol=1e-5)

    with running_server(["--model_name=questions", f"--model_base_path={path.parent}"],
                        tmp_path / "server.log") as server:
        status, reply = http("POST", f"{server.url}/v1/models/questions:predict",
                             {"instances": texts})
    assert status == 200, reply
    assert [p["label"] for p in reply["predictions"]] == labels


def test_evaluate_scores_another_file_and_rejects_unseen_labels(csv_run, questions, tmp_path,
                                                                capsys):
    _, _, result = csv_run
    other = tmp_path / "other.tsv"
    with open(questions / "test.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:50]
    other.write_text("kind\tquestion\n" + "".join(f"{r['kind']}\t{r['question']}\n"
                                                 for r in rows))
    assert main(["evaluate", "classify", "--run-dir", str(result.run_dir),
                 "--data", str(other)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["n_examples"] == 50 and scored["data"] == str(other)
    assert (result.run_dir / "evaluation-other.json").is_file()
    # Another file of the same stem replaces it, and says so.
    same_stem = tmp_path / "other.csv"
    same_stem.write_text("kind,question\n" + "".join(f"{r['kind']},\"{r['question']}\"\n"
                                                     for r in rows))
    assert main(["evaluate", "classify", "--run-dir", str(result.run_dir),
                 "--data", str(same_stem)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["data"] == str(same_stem)
    assert (f"evaluation-other.json held the scores of {other}; it now holds those of "
            f"{same_stem}") in captured.err

    other.write_text("kind\tquestion\nCOLOUR\tWhat colour is the sky ?\n"
                     "COLOUR\tWhat colour is grass ?\nHUM\tWho is she ?\n")
    assert main(["evaluate", "classify", "--run-dir", str(result.run_dir),
                 "--data", str(other)]) == 2
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "labels never seen in training: 'COLOUR' (2 rows)" in error


def test_bag_of_words_reads_jsonl_gz(questions, tmp_path):
    from pipelines.training.trainer import train

    def write(split, name):
        with open(questions / f"{split}.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with gzip.open(tmp_path / name, "wt", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({"q": row["question"], "y": row["kind"]}) + "\n")

    write("train", "train.jsonl.gz")
    write("test", "val.jsonl.gz")
    task = get_task("classify")
    config = task.config("quick", [f"data={tmp_path / 'train.jsonl.gz'}",
                                   f"validation_data={tmp_path / 'val.jsonl.gz'}",
                                   "text_column=q", "label_column=y", "model=bow", "epochs=3",
                                   "max_tokens=4000", "units=32"])
    result = train(task, config, tmp_path / "run")
    assert result.model.name == "classify_bow_lstm"
    assert result.metrics["at_best_epoch"]["val_accuracy"] > 0.5


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def datasets_error(tmp_path, rows, *overrides):
    task = get_task("classify")
    train = write_csv(tmp_path / "train.csv", rows)
    config = task.config("quick", [f"data={train}", *overrides])
    with pytest.raises(UserError) as err:
        task.datasets(config)
    return str(err.value)


def test_bad_training_data_is_one_clear_error(tmp_path, caplog):
    assert "has no rows" in datasets_error(tmp_path, [])
    message = datasets_error(tmp_path, [("a", "x"), ("b", "x")], "validation_fraction=0.01")
    assert "has 1 class ('x'); a classifier needs at least two" in message
    message = datasets_error(tmp_path, [("", "x")] * 3 + [("a", "x"), ("b", "y")])
    assert "3 of 5 rows (60%) have empty text" in message
    assert "train.csv, line 3: the label is empty" in datasets_error(
        tmp_path, [("a", "x"), ("b", "")])
    assert "the text and the label column are both 'text'" in datasets_error(
        tmp_path, [("a", "x")], "label_column=text")
    validation = write_csv(tmp_path / "val.csv", [("a", "x"), ("c", "z"), ("d", "z")])
    message = datasets_error(tmp_path, [("a", "x"), ("b", "y")],
                             f"validation_data={validation}")
    assert "val.csv has labels never seen in training: 'z' (2 rows)" in message

    # Below the threshold, empty rows are dropped and counted in the log.
    task = get_task("classify")
    rows = [(f"text {i}", "xy"[i % 2]) for i in range(40)] + [("  ", "x")]
    config = task.config("quick", [f"data={write_csv(tmp_path / 'ok.csv', rows)}"])
    with caplog.at_level(logging.WARNING, logger="pipelines.datasets.data_files"):
        task.datasets(config)
    # The count is of the rows training keeps, and the message says so.
    assert re.search(r"ok.csv \(all but the held-out 0.1\): dropped 1 of \d+ rows with empty "
                     "text", caplog.text)


def test_a_label_whose_only_rows_were_held_out_is_left_out_of_validation(tmp_path, caplog):
    """The hash that picks validation rows can take all rows of a rare label: those rows are
    left out of validation with a warning, not an error the user cannot act on."""
    task = get_task("classify")
    common = [(f"text {i}", "xy"[i % 2]) for i in range(60)]
    for i in range(200):  # find a rare row the seeded hash holds out
        path = write_csv(tmp_path / f"r{i}.csv", [*common, (f"rare {i}", "z")])
        config = task.config("quick", [f"data={path}"])
        if "z" not in task.train_scan(config).counts:
            break
    else:
        raise AssertionError("no held-out row among 200")
    with caplog.at_level(logging.WARNING, logger="pipelines.tasks.classify"):
        _, validation = task.datasets(config)
    assert "left out 1 rows of labels the training part lacks" in caplog.text
    labels = [int(y) for _, ys in validation for y in ys.numpy()]
    assert labels and set(labels) <= {0, 1}


def test_labels_are_read_without_surrounding_spaces(tmp_path):
    """A CSV typed with a space after its commas gives the labels their plain names, so they
    match the same labels in a JSONL validation file (and the export answers "pos", not " pos")."""
    task = get_task("classify")
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"good film {i}, pos\nbad film {i},neg \n"
                                                for i in range(20)), encoding="utf-8")
    validation = tmp_path / "validation.jsonl"
    validation.write_text('{"text": "a good one", "label": "pos"}\n'
                          '{"text": "a bad one", "label": "neg"}\n', encoding="utf-8")
    config = task.config("quick", [f"data={train}", f"validation_data={validation}"])
    assert task.label_names(config) == ["pos", "neg"]
    assert dict(task.scan(config, "validation", ["pos", "neg"]).counts) == {"pos": 1, "neg": 1}


def test_cli_data_flags(tmp_path, capsys):
    assert main(["train", "classify", "--data", str(tmp_path / "missing.csv"),
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "missing.csv does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # no empty run left behind
    rows = [(f"text {i}", "xy"[i % 2]) for i in range(40)]
    assert main(["train", "classify", "--data", str(write_csv(tmp_path / "r.csv", rows)),
                 "--test-data", str(tmp_path / "tset.csv"),
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "test data file" in capsys.readouterr().err  # before training, not after it
    path = write_csv(tmp_path / "t.csv", [("a", "x"), ("b", "y")])
    assert main(["train", "classify", "--data", str(path), "--text-column", "body",
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "no column 'body'; its columns are 'text', 'label'" in capsys.readouterr().err
    assert main(["train", "classify", "--data", str(path), "--source-column", "s",
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "task classify takes no --source-column" in capsys.readouterr().err


def test_character_features_tell_unknown_words_apart_and_keep_padding_masked():
    """With char_features two words outside the vocabulary no longer look alike (without them
    both are the one unknown id), and a text scores the same alone and beside a longer one."""
    import keras

    from models.sentiment import make_vectorizer, many_to_one

    texts = tf.data.Dataset.from_tensor_slices(
        ["what is the capital of france", "who wrote hamlet", "how many people live here"])
    vectorizer = make_vectorizer(texts.batch(3), max_tokens=100)
    unknown = tf.constant(["who is zanzibar", "who is qwxyvz"])
    scores = {}
    for chars in (False, True):
        keras.utils.set_random_seed(5)
        model = many_to_one(vectorizer, embedding_dim=8, units=8, dense_units=8, classes=3,
                            pooling="max_mean", keep="last", max_length=6,
                            char_features=chars, char_filters=6, char_dim=4)
        scores[chars] = model(unknown).numpy()
        alone = model(tf.constant(["who wrote zanzibar"])).numpy()
        beside = model(tf.constant(["who wrote zanzibar",
                                    "how many people live in the capital of france"])).numpy()
        np.testing.assert_allclose(beside[0], alone[0], atol=1e-6)
        # Lower-casing "İ" adds a combining dot (no letter) and so a token: still in line.
        assert model(tf.constant(["Where is İstanbul ?", "İ"])).shape == (2, 3)
    np.testing.assert_allclose(scores[False][0], scores[False][1], atol=1e-7)
    assert np.abs(scores[True][0] - scores[True][1]).max() > 1e-4


def test_character_features_do_not_fit_a_language_models_layers(tmp_path):
    task = get_task("classify")
    with pytest.raises(UserError, match="char_features=true widens"):
        task.config("quick", ["data=trec"]).replace(char_features=True,
                                                    encoder_from=str(tmp_path)).validate()


def test_texts_without_a_word_score_finite_with_max_and_mean_pooling():
    """A text of only punctuation, only spaces or nothing has no valid step: the mean over
    time is zeros (Keras's average pooling divided 0 by 0 and the scores were NaN)."""

    from models.sentiment import make_vectorizer, many_to_one

    texts = tf.data.Dataset.from_tensor_slices(["a good question", "what is it"]).batch(2)
    model = many_to_one(make_vectorizer(texts, 50), embedding_dim=8, units=8, dense_units=8,
                        pooling="max_mean", classes=3, seed=1)
    scores = model(tf.constant(["", "   ", "!!!", "a good question"])).numpy()
    assert np.isfinite(scores).all(), scores


def _rows(questions, limit):
    with open(questions / "train.csv", encoding="utf-8") as handle:
        return [(r["question"], r["kind"]) for r in list(csv.DictReader(handle))[:limit]]


def test_resume_keeps_the_runs_labels_and_refuses_other_data(questions, tmp_path, capsys):
    """--resume trains on the data the run started with: another --data or seed is refused,
    a file edited to hold a new label is refused, and both leave config.json as it was; a file
    whose rows were reordered (so its labels first appear in another order) keeps the model's
    label ids."""
    from models.label_names import label_names
    from pipelines.training.checkpoints import CheckpointStore
    from pipelines.training.trainer import resume_config

    rows = _rows(questions, 240)
    data = write_csv(tmp_path / "q.csv", rows)
    run = tmp_path / "run"
    small = ["--set", "epochs=1", "--set", "units=8", "--set", "embedding_dim=8",
             "--set", "dense_units=8", "--set", "max_tokens=500"]
    assert main(["train", "classify", "--data", str(data), "--run-dir", str(run), *small]) == 0
    capsys.readouterr()
    config_text = (run / "config.json").read_text()

    other = write_csv(tmp_path / "other.csv", rows[:200])
    for change in (["--data", str(other)], ["--set", "seed=7"]):
        assert main(["train", "classify", "--run-dir", str(run), "--resume", *change]) == 2
        assert "cannot resume" in capsys.readouterr().err
    # The model comes back from the checkpoint: a new size would be recorded, never used.
    for change in (["--set", "units=32"], ["--cell", "gru"], ["--set", "dropout=0.1"]):
        assert main(["train", "classify", "--run-dir", str(run), "--resume", *change]) == 2
        assert "its checkpoint is a model built with" in capsys.readouterr().err
    write_csv(data, [*rows, ("What colour is the sky ?", "COLOUR")])
    assert main(["train", "classify", "--run-dir", str(run), "--resume",
                 "--set", "epochs=2"]) == 2
    assert "never seen in training: 'COLOUR' (1 rows)" in capsys.readouterr().err
    assert (run / "config.json").read_text() == config_text

    task = get_task("classify")
    model = CheckpointStore(run).load_model("last")
    names = label_names(model)
    reordered = sorted(rows, key=lambda row: row[1] != names[-1])  # the last label first
    write_csv(data, reordered)
    config = resume_config(task, run, ["epochs=2"])
    task.resume_from(model, config)
    train_data, _ = task.datasets(config)
    truth = dict(rows)
    texts, ids = next(iter(train_data.unbatch().batch(1000)))
    seen = [(t.decode(), names[i]) for t, i in zip(texts.numpy(), ids.numpy(), strict=True)]
    assert len(seen) > 100 and all(truth[text] == label for text, label in seen)
