"""`language_model`: a tiny seeded run on a few thousand real WikiText-2 tokens written to .txt
files learns (perplexity clearly below the unigram baseline of the same run), evaluates,
exports, reloads and generates / answers next_words, also through the model server and
`rnnkit generate`; the tokenizers agree in Python and TensorFlow; the Kneser-Ney baseline is a
distribution; every bad input is one clear error (or, for unknown words, an answer)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import tensorflow as tf

from app.cli import main
from pipelines.datasets import text_corpus, wikitext2
from pipelines.tasks import get_task
from pipelines.tasks.ngram_baselines import bigram_kneser_ney_probabilities
from serving.errors import UserError
from tests.serving_harness import running_server

SMALL = ["epochs=6", "batch_size=8", "tbptt_steps=20", "learning_rate=0.01", "layers=1",
         "embedding_dim=48", "units=48", "max_tokens=800", "sampled_words=200", "dropout=0.1",
         "embedding_dropout=0.0", "early_stopping_patience=6", "generate_words=8"]


def first_tokens(split: str, tokens: int) -> list[str]:
    """The first lines of a WikiText-2 split holding about `tokens` tokens."""
    lines, count = [], 0
    for _, row in wikitext2.rows(split):
        lines.append(row["text"])
        count += len(row["text"].split()) + 1
        if count >= tokens:
            break
    return lines


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("wikitext")
    for split, tokens in (("train", 12_000), ("validation", 2_500), ("test", 2_500)):
        (folder / f"{split}.txt").write_text("\n".join(first_tokens(split, tokens)) + "\n")
    return folder


@pytest.fixture(scope="module")
def lm_run(corpus, tmp_path_factory):
    from pipelines.training.trainer import train

    task = get_task("language_model")
    config = task.config("quick", [f"data={corpus / 'train.txt'}",
                                   f"validation_data={corpus / 'validation.txt'}",
                                   f"test_data={corpus / 'test.txt'}", *SMALL])
    return task, config, train(task, config, tmp_path_factory.mktemp("runs") / "lm")


@pytest.fixture(scope="module")
def exported(lm_run, tmp_path_factory):
    from pipelines.training.export import export_run

    task, _, result = lm_run
    return export_run(task, result.run_dir, tmp_path_factory.mktemp("exports"), "wiki")


@pytest.fixture(scope="module")
def evaluation(lm_run) -> dict:
    """`rnnkit evaluate language_model` of the run, with its default settings (one JSON)."""
    _, _, result = lm_run
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", "language_model", "--run-dir", str(result.run_dir)]) == 0
    return json.loads(out.getvalue())


def test_learns_below_the_count_baselines(evaluation):
    report = evaluation
    baselines = report["baselines"]
    assert report["perplexity"] < 0.7 * baselines["unigram_perplexity"], report
    assert baselines["kneser_ney_bigram_perplexity"] < baselines["unigram_perplexity"]
    assert 0 < report["validation_perplexity"] < baselines["unigram_perplexity"]
    assert 0 < report["top1_accuracy"] <= report["top5_accuracy"] < 1
    assert report["vocabulary"] == 800 and report["tokens"] > 2000


def test_cache_lowers_perplexity_and_can_be_switched_off(lm_run, evaluation, capsys):
    # Wikipedia articles repeat their own rare words: the cache, tuned on validation only,
    # must find them on the test text (a misaligned cache points at the wrong words and hurts).
    _, _, result = lm_run
    report = evaluation
    cache = report["cache"]
    assert cache["size"] == 2000 and 0 < cache["lambda"] < 1 and cache["theta"] > 0
    assert cache["perplexity"] < 0.95 * report["perplexity"], report
    assert cache["validation_perplexity"] < report["validation_perplexity"]
    assert main(["evaluate", "language_model", "--run-dir", str(result.run_dir),
                 "--set", "cache_size=0"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "cache" not in plain and plain["perplexity"] == report["perplexity"]
    assert main(["evaluate", "language_model", "--run-dir", str(result.run_dir),
                 "--set", "cache_size=-5"]) == 2
    assert "cache_size=-5 is not in [0, 10,000]" in capsys.readouterr().err
    # The run's own config is untouched by --set.
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["cache_size"] == 2000


def test_export_generates_and_answers_next_words(exported):
    loaded = tf.saved_model.load(str(exported))
    prompts = tf.constant(["the game was", "Valkyria Chronicles", "zzzqqq xxyyzz", ""])
    greedy = loaded.signatures["serving_default"](text=prompts)["continuation"].numpy()
    assert greedy.shape == (4,)
    assert all(0 < len(text.split()) <= 8 for text in greedy[:3]), greedy
    assert not any(b"<unk>" in text for text in greedy)

    def sample(temperature, top_k, seed, words=6):
        n = prompts.shape[0]
        return loaded.signatures["generate"](
            text=prompts, temperature=tf.fill([n], temperature), top_k=tf.fill([n], top_k),
            seed=tf.fill([n], tf.constant(seed, tf.int64)),
            words=tf.fill([n], words))["continuation"].numpy()

    # top_k 1 is greedy whatever the temperature or seed; a seed repeats a sample exactly.
    greedy6 = sample(0.5, 1, 3)
    assert [t.split()[:6] for t in greedy6] == [t.split()[:6] for t in greedy]
    assert list(sample(1.5, 50, 7)) == list(sample(1.5, 50, 7))
    assert list(sample(1.5, 50, 7)) != list(sample(1.5, 50, 8))
    assert all(len(t.split()) <= 2 for t in sample(1.0, 5, 1, words=2))
    assert list(sample(1.0, 5, 1, words=0)) == [b""] * 4
    # A huge prompt is read up to its last max_input_tokens words; too many prompts are refused.
    huge = loaded.signatures["next_words"](text=tf.constant([("word " * 200_000) + "the"]))
    assert huge["words"].shape == (1, 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 64 are read"):
        loaded.signatures["next_words"](text=tf.constant(["the"] * 65))
    meta = json.loads((exported / "assets.extra" / "rnnkit_export.json").read_text())
    assert meta["kind"] == "language_model" and meta["max_input_tokens"] == 200
    # An empty batch answers an empty batch.
    nothing = tf.constant([], tf.string)
    assert loaded.signatures["serving_default"](text=nothing)["continuation"].shape == (0,)
    assert loaded.signatures["next_words"](text=nothing)["words"].shape == (0, 5)

    out = loaded.signatures["next_words"](text=prompts)
    words, p = out["words"].numpy(), out["probabilities"].numpy()
    assert words.shape == (4, 5) and p.shape == (4, 5)
    assert (np.diff(p, axis=1) <= 0).all() and (p > 0).all() and (p.sum(axis=1) <= 1 + 1e-5).all()
    assert b"<unk>" not in words.ravel()
    # A line's end (<eos> follows its full stop in every training line) is no word to offer.
    after_stop = loaded.signatures["next_words"](text=tf.constant(["It was released in 2011 ."]))
    assert b"<eos>" not in after_stop["words"].numpy().ravel()
    # After "the" comes a word, not another "the": the model knows the text a little.
    after_the = loaded.signatures["next_words"](text=tf.constant(["It was one of the"]))
    assert after_the["words"].numpy()[0, 0] != b"the"

    # A huge temperature flattens the scores; <unk> stays banned (it was banned before the
    # division, so 1e30 or inf flattened the ban away too).
    assert not any(b"<unk>" in t for t in sample(1e30, 50, 5, words=20))

    two = tf.constant(["the", "a"])
    for bad, reason in (({"temperature": [0.0, 0.9]}, "temperature must be > 0"),
                        ({"temperature": [float("inf"), 0.9]}, "must be a finite number"),
                        ({"top_k": [0, 5]}, "top_k must be >= 1"),
                        ({"words": [1000, 3]}, "words must be <= 100"),
                        ({"temperature": 0.9}, "temperature must hold one value per text"),
                        ({"seed": []}, "seed must hold one value per text")):
        args = {"temperature": [0.7, 0.9], "top_k": [5, 5], "seed": [1, 2], "words": [3, 3],
                **bad}
        with pytest.raises(tf.errors.InvalidArgumentError, match=reason) as err:
            loaded.signatures["generate"](
                text=two, temperature=tf.constant(args["temperature"], tf.float32),
                top_k=tf.constant(args["top_k"], tf.int32),
                seed=tf.constant(args["seed"], tf.int64),
                words=tf.constant(args["words"], tf.int32))
        # The message names the problem, never the values (another client's, when batched).
        assert "0.9" not in str(err.value).split("\n")[0], err.value


def test_generate_command_through_the_server(exported, tmp_path, capsys):
    with running_server(["--model_name=wiki", f"--model_base_path={exported.parent}"],
                        tmp_path / "server.log") as server:
        address = f"--server=127.0.0.1:{server.grpc_port}"
        assert main(["generate", "The game was", "--model", "wiki", address, "--words", "5",
                     "--temperature", "0.8", "--seed", "11"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert main(["generate", "The game was", "--model", "wiki", address, "--words", "5",
                     "--temperature", "0.8", "--seed", "11"]) == 0
        assert json.loads(capsys.readouterr().out) == first
        assert main(["generate", "The game was", "--model", "wiki", address, "--next"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert main(["generate", "x", "--model", "wiki", address, "--top-k", "0"]) == 2
        error = capsys.readouterr().err
        # `rnnkit predict` (and the web page) read the kind from the signatures.
        assert main(["predict", "--model", "wiki", address, "zzzqqq"]) == 0
        predicted = json.loads(capsys.readouterr().out)
    [result] = first["generations"]
    assert result["prompt"] == "The game was" and 0 < len(result["continuation"].split()) <= 5
    assert first["seed"] == 11
    assert len(answer["next_words"][0]["words"]) == 5
    assert error.count("\n") == 1 and "top_k must be >= 1. —" in error, error
    assert predicted["kind"] == "language_model"
    assert len(predicted["outputs"]["continuation"]) == 1  # unknown words answer, too


def test_tokenizers_agree_in_python_and_tensorflow():
    texts = ["A quiet, lovely film.<br /><br />I'd see it AGAIN!", "  café (1990) -- ok ",
             "= Valkyria Chronicles III =", "",
             # Spaces beyond ASCII's (web text and French are full of no-break spaces).
             "Tom\u00a0is\u2003here\u3000now\x1cand\x85then <br\u00a0/>Gone"]
    for mode in text_corpus.TOKENIZERS:
        graph = text_corpus.tf_words(tf.constant(texts), mode).to_list()
        assert [[w.decode() for w in row] for row in graph] == \
            [text_corpus.words(t, mode) for t in texts]
    assert text_corpus.words(texts[0], "lower_punct")[:4] == ["a", "quiet", ",", "lovely"]


def test_documents_lines_or_running_and_tables(tmp_path):
    assert list(text_corpus.token_stream(["a b", "", "c"], "whitespace", "lines")) == \
        ["a", "b", "<eos>", "<eos>", "c", "<eos>"]
    assert list(text_corpus.token_stream(["a b", "", "c"], "whitespace", "running")) == \
        ["a", "b", "c"]
    (tmp_path / "reviews.csv").write_text('id,review\n1,"Great, great film."\n2,A dull film.\n')
    task = get_task("language_model")
    config = task.config("quick", [f"data={tmp_path / 'reviews.csv'}", "text_column=review",
                                   "validation_fraction=0.01"])
    words = task.vocabulary(config)
    # Counts 2 each, ties in order of first appearance; punctuation split off, lower-cased.
    assert words[:5] == ["<unk>", "<eos>", "great", "film", "."] and "," in words
    with pytest.raises(UserError, match="has no column 'text'"):
        task.vocabulary(task.config("quick", [f"data={tmp_path / 'reviews.csv'}"]))


def test_running_text_holds_out_whole_passages(tmp_path):
    """documents=running: validation is passages of consecutive lines, not lines spliced from
    all over the text; documents=lines keeps the per-line hash."""
    lines = [f"line{k} of the book" for k in range(2000)]
    (tmp_path / "book.txt").write_text("\n".join(lines) + "\n")
    task = get_task("language_model")
    config = task.config("quick", [f"data={tmp_path / 'book.txt'}", "documents=running"])
    train = [int(t.split()[0][4:]) for t in task._rows(config, "train")]
    validation = [int(t.split()[0][4:]) for t in task._rows(config, "validation")]
    assert sorted(train + validation) == list(range(2000))
    assert 100 <= len(validation) <= 300  # about validation_fraction=0.1 of the lines
    # 2,000 lines make passages of 10: each one wholly in one part.
    assert {k // 10 for k in validation}.isdisjoint({k // 10 for k in train})
    assert len(validation) % 10 == 0
    by_line = task.config("quick", [f"data={tmp_path / 'book.txt'}"])
    held = [int(t.split()[0][4:]) for t in task._rows(by_line, "validation")]
    assert {k // 10 for k in held} & {k // 10 for k in train}  # lines: scattered
    # A small file is still split (passages of one line).
    (tmp_path / "short.txt").write_text("\n".join(lines[:60]) + "\n")
    short = task.config("quick", [f"data={tmp_path / 'short.txt'}", "documents=running",
                                  "validation_fraction=0.2"])
    assert 0 < len(list(task._rows(short, "validation"))) < 60


def test_a_text_column_given_for_a_plain_text_file_is_named_as_unused(tmp_path, caplog):
    (tmp_path / "corpus.txt").write_text("a quiet film\nanother quiet film\n")
    task = get_task("language_model")
    with caplog.at_level("WARNING", logger="pipelines.tasks.language_model"):
        task.vocabulary(task.config("quick", [f"data={tmp_path / 'corpus.txt'}",
                                              "validation_fraction=0.01"]))
        assert not caplog.records
        words = task.vocabulary(task.config("quick", [f"data={tmp_path / 'corpus.txt'}",
                                                      "text_column=body",
                                                      "validation_fraction=0.01"]))
    assert "quiet" in words  # the lines are still read, whatever the column's name
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'corpus.txt'} is plain text, one document per line: the text column "
        "'body' applies to .csv/.tsv/.jsonl files only, not to it"]


def test_loss_is_exact_in_validation_and_sampled_in_training():
    from models.language_model import build_language_model, run, zero_states

    words = ["<unk>", "<eos>", *[f"w{i}" for i in range(60)]]
    model = build_language_model(words, embedding_dim=8, units=8, layers=2, sampled_words=10)
    ids = np.random.default_rng(0).integers(0, len(words), (3, 7)).astype("int32")
    targets = np.roll(ids, -1, axis=1)
    hidden = model(ids[..., None], training=False)
    logits, _ = run(model, ids, zero_states(model, 3))
    exact = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    np.testing.assert_allclose(model.compute_loss(y=targets, y_pred=hidden, training=False),
                               exact, rtol=1e-5)
    sampled = model.compute_loss(y=targets, y_pred=hidden, training=True)
    assert np.isfinite(sampled) and abs(float(sampled) - float(exact)) > 1e-3
    # The setting survives a save and load (the checkpoints' format).
    assert type(model).from_config(model.get_config()).lm_config["sampled_words"] == 10


def test_kneser_ney_bigram_is_a_distribution():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 30, 2000)
    for context in (0, 5, 35):  # 35: a context never seen in training
        p = bigram_kneser_ney_probabilities(train, 40, np.full(40, context), np.arange(40))
        assert (p > 0).all()
        np.testing.assert_allclose(p.sum(), 1.0, atol=1e-9)


def datasets_error(tmp_path, text, *overrides):
    (tmp_path / "c.txt").write_text(text)
    task = get_task("language_model")
    config = task.config("quick", [f"data={tmp_path / 'c.txt'}", *overrides])
    with pytest.raises(UserError) as err:
        task.datasets(config)
    return str(err.value)


def test_bad_corpora_are_one_clear_error(tmp_path):
    assert "has no words" in datasets_error(tmp_path, "\n\n  \n")
    message = datasets_error(tmp_path, "a b c d e f g h\n" * 20, "batch_size=4",
                             "tbptt_steps=35")
    assert "fewer than one BPTT window" in message and "\n" not in message
    # Twenty copies of one line: the held-out validation part (by a hash of the text) is empty.
    assert "held-out" in message and "--validation-data" in message
    assert "is not a way to read text" in datasets_error(tmp_path, "a b\n", "documents=pages")
    assert "tbptt_steps=none" in datasets_error(tmp_path, "a b\n", "tbptt_steps=none")
    task = get_task("language_model")
    with pytest.raises(UserError, match="is for tag tasks, not running text"):
        task.datasets(task.config("quick", ["data=ud_en_ewt"]))


def test_scoring_nll_is_the_softmax_cross_entropy_without_its_gradient_array():
    from models.language_model import negative_log_likelihood

    rng = np.random.default_rng(3)
    for shape in ([7, 50], [3, 4, 1000]):
        # Large scores too: logsumexp must not overflow where exp() alone would.
        logits = tf.constant(rng.normal(0, 30, shape), tf.float32)
        labels = tf.constant(rng.integers(0, shape[-1], shape[:-1]), tf.int32)
        expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        got = negative_log_likelihood(logits, labels)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)
        assert np.isfinite(got.numpy()).all()


@pytest.mark.parametrize(("flag", "value", "reason"), [
    ("--seed", "99999999999999999999", "is not a seed from 0 to 2**63-1"),
    ("--temperature", "inf", "is not a finite number"),
    ("--top-k", "99999999999", "is not a 32-bit integer")])
def test_generate_flags_outside_the_exports_input_types_are_refused(flag, value, reason,
                                                                     capsys):
    """Before any request: a seed beyond int64 raised TypeError from the gRPC tensor proto, an
    infinite temperature printed invalid JSON, a top_k beyond int32 was sent wrapped."""
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "The movie was", flag, value])
    assert exit_.value.code == 2 and reason in capsys.readouterr().err
