"""The data-file readers: a real CSV parser (quoting, embedded newlines, UTF-8), TSV, JSONL and
gzip, CoNLL/CoNLL-U/JSONL tagged sentences, the named data sets, one clear error per bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from pipelines.datasets import data_files
from pipelines.datasets.data_files import (
    iter_table,
    iter_tagged,
    read_table,
    read_tagged,
    table_columns,
)
from serving.errors import UserError


def rows(path, columns):
    return [row for _, row in iter_table(path, columns)]


def test_csv_quotes_commas_newlines_and_utf8(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('id,text,label\n'
                    '1,"Good, really good",pos\n'
                    '2,"two\nlines, and ""quotes""",neg\n'
                    '\n'
                    '3,Ça coûte 5 €,pos\n', encoding="utf-8")
    assert rows(path, ["text", "label"]) == [
        {"text": "Good, really good", "label": "pos"},
        {"text": 'two\nlines, and "quotes"', "label": "neg"},
        {"text": "Ça coûte 5 €", "label": "pos"}]
    # Each row reports the line it starts on, counting the embedded newline.
    assert [line for line, _ in iter_table(path, ["id"])] == [2, 3, 6]
    # The tf.data stream yields exactly the same rows, only the requested columns.
    streamed = list(read_table(path, ["label", "text"]).as_numpy_iterator())
    assert streamed[1] == {"label": b"neg", "text": b'two\nlines, and "quotes"'}


def test_tsv_jsonl_and_gzip(tmp_path):
    (tmp_path / "a.tsv").write_text('text\tlabel\n"a, b"\tx\nc\ty\n')
    assert rows(tmp_path / "a.tsv", ["text"]) == [{"text": "a, b"}, {"text": "c"}]
    lines = [json.dumps({"text": "héllo", "label": 1, "extra": [1]}),
             "", json.dumps({"label": "2", "text": "bye"})]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    assert rows(tmp_path / "a.jsonl.gz", ["text", "label"]) == [
        {"text": "héllo", "label": "1"}, {"text": "bye", "label": "2"}]
    assert table_columns(tmp_path / "a.jsonl.gz") == ["text", "label", "extra"]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    """Excel's "CSV UTF-8" begins the file with a BOM; the header is still `text`."""
    from pipelines.datasets.text_corpus import iter_text_lines

    bom = "\ufeff"
    (tmp_path / "excel.csv").write_text(bom + "text,label\nfine,pos\n", encoding="utf-8")
    assert table_columns(tmp_path / "excel.csv") == ["text", "label"]
    assert rows(tmp_path / "excel.csv", ["text", "label"]) == [{"text": "fine", "label": "pos"}]
    (tmp_path / "a.conll").write_text(bom + "The DET\ncat NOUN\n", encoding="utf-8")
    assert [row for _, row in iter_tagged(tmp_path / "a.conll")] == [
        {"tokens": ["The", "cat"], "tags": ["DET", "NOUN"]}]
    (tmp_path / "corpus.txt").write_text(bom + "first line\n", encoding="utf-8")
    assert [row for _, row in iter_text_lines(tmp_path / "corpus.txt")] == [
        {"text": "first line"}]
    # Only a leading BOM goes: one inside the text is the user's.
    (tmp_path / "inner.csv").write_text("text\n" + bom + "x\n", encoding="utf-8")
    assert rows(tmp_path / "inner.csv", ["text"]) == [{"text": bom + "x"}]


@pytest.mark.parametrize(("content", "columns", "message"), [
    (None, ["text"], r"data file .*missing.csv does not exist"),
    (b"", ["text"], r"is empty"),
    (b"text,label\nhi,x\n", ["text", "lable"],
     r"no column 'lable'; its columns are 'text', 'label'"),
    (b"text,text,label\na,b,x\n", ["text", "label"], r"more than one column named 'text'"),
    (b"\n\n\n", ["text"], r"has no columns: its first line is blank"),
    (b"text;label\nhi;x\n", ["text"], r"its columns are 'text;label' .*looks ';'-separated, but "
     r"\.csv files are read as comma-separated"),
    (b"text,label\nok,x\nbad \xff byte,y\n", ["text"], r"line 3: invalid UTF-8"),
    (b"text,label\nok,x\na,b,c\n", ["text"], r"line 3: malformed row with 3 fields"),
    (b'text,label\nok,x\n"never closed,y\n', ["text"], r"line 3: malformed row"),
])
def test_table_errors_name_file_and_line(tmp_path, content, columns, message):
    path = tmp_path / "missing.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        rows(path, columns)


def test_a_misspelt_data_set_name_is_named_with_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"data file imdbb does not exist — check the path given "
                                        r"to --data, or name a data set rnnkit knows: flickr8k, "
                                        r"imdb, .* \(did you mean 'imdb'\?\)"):
        table_columns("imdbb")
    with pytest.raises(UserError, match=r"does not exist — check the path given to --data$"):
        table_columns("no/such.csv")


def test_jsonl_errors_and_unsupported_extension(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"line 2: not a JSON object"):
        rows(path, ["text"])
    path.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(UserError, match=r"line 2, has no column 'text'"):
        rows(path, ["text"])
    (tmp_path / "a.xlsx").write_bytes(b"PK")
    with pytest.raises(UserError, match=r"cannot read files of type '.xlsx'"):
        rows(tmp_path / "a.xlsx", ["text"])


def test_conll_and_jsonl_tagging(tmp_path):
    (tmp_path / "a.conll").write_text("The DT B-NP\ncat NN I-NP\n\n\nsat VBD B-VP\n")
    sentences = list(iter_tagged(tmp_path / "a.conll"))
    assert sentences == [(1, {"tokens": ["The", "cat"], "tags": ["B-NP", "I-NP"]}),
                         (5, {"tokens": ["sat"], "tags": ["B-VP"]})]
    # --tag-column picks another column (1-based).
    assert next(iter_tagged(tmp_path / "a.conll", "", "2"))[1]["tags"] == ["DT", "NN"]
    (tmp_path / "a.jsonl").write_text(json.dumps({"tokens": ["Hi", "!"], "tags": ["X", "P"]}))
    streamed = list(read_tagged(tmp_path / "a.jsonl").as_numpy_iterator())
    assert streamed[0]["tokens"].tolist() == [b"Hi", b"!"]


def test_conll_2003_document_separators_are_skipped(tmp_path):
    """CoNLL-2003 files begin each document with `-DOCSTART- -X- -X- O`, no sentence."""
    (tmp_path / "ner.conll").write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n"
                                        "rejects VBZ B-VP O\n-DOCSTART- -X- -X- O\n"
                                        "Peter NNP B-NP B-PER\n")
    assert list(iter_tagged(tmp_path / "ner.conll")) == [
        (3, {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}),
        (6, {"tokens": ["Peter"], "tags": ["B-PER"]})]
    (tmp_path / "only.conll").write_text("-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(UserError, match="has no tagged tokens"):
        list(iter_tagged(tmp_path / "only.conll"))


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    cols = "\t_\t{}\t{}\t_\t0\troot\t_\t_"
    text = "\n".join([
        "# sent_id = 1", "# text = Don't go",
        "1-2\tDon't" + "\t_" * 8,
        "1\tDo" + cols.format("AUX", "VBP"),
        "2\tn't" + cols.format("PART", "RB"),
        "3\tgo" + cols.format("VERB", "VB"),
        "3.1\tgone" + cols.format("VERB", "VBN"), ""])
    path = tmp_path / "a.conllu"
    path.write_text(text + "\n")
    [(line, sentence)] = list(iter_tagged(path))
    assert line == 4
    assert sentence == {"tokens": ["Do", "n't", "go"], "tags": ["AUX", "PART", "VERB"]}
    assert next(iter_tagged(path, "lemma", "xpos"))[1]["tags"] == ["VBP", "RB", "VB"]


def test_tagging_errors_name_the_line(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("The DT\ncat NN\nsat\n")
    with pytest.raises(UserError, match=r"a.conll, line 3: 1 columns where the sentence starting "
                                         r"at line 1 has 2"):
        list(iter_tagged(path))
    path.write_text("The\ncat\n")
    with pytest.raises(UserError, match=r"line 1: 1 column\(s\), no separate token"):
        list(iter_tagged(path))
    path.write_text("\n\n")
    with pytest.raises(UserError, match=r"has no tagged tokens"):
        list(iter_tagged(path))
    (tmp_path / "a.jsonl").write_text(json.dumps({"tokens": ["a"], "tags": []}) + "\n"
                                      + json.dumps({"tokens": ["a", "b"], "tags": ["X"]}))
    with pytest.raises(UserError, match=r"a.jsonl, line 1: 1 tokens but 0 tags"):
        list(iter_tagged(tmp_path / "a.jsonl"))


def test_named_data_sets_read_the_mirror(shared_data):
    trec = data_files.named_dataset("trec")
    train = [row for _, row in trec.rows("train", ["text", "label"])]
    assert len(train) == 5452
    assert {row["label"] for row in train} == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    # Line 66 holds the file's one non-UTF-8 byte; Latin-1 reads it.
    assert "\u00f0" in train[65]["text"]
    ud = data_files.named_dataset("ud_en_ewt")
    dev = [row for _, row in ud.rows("validation", ["", ""])]
    assert len(dev) == 2001
    assert sum(len(s["tokens"]) for s in dev) == 25149
    assert data_files.named_dataset("no/such.csv") is None


def test_column_flags_pick_a_named_data_sets_other_columns(shared_data):
    from pipelines.tasks.classify import ClassifyConfig
    from pipelines.tasks.tagging import TagConfig

    def labels(**columns):
        config = ClassifyConfig(data="trec", **columns)
        return {row[config.label_column] for _, row in data_files.iter_part(
            config, "test", ("text_column", "label_column"), lambda r: r["text"])}

    assert labels() == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    fine = labels(label_column="fine")
    assert len(fine) > 6 and {label.split(":")[0] for label in fine} == labels()
    with pytest.raises(UserError, match=r"no column 'topic'; its columns are 'text', 'label'"):
        labels(label_column="topic")
    with pytest.raises(UserError, match=r"--text-column and --label-column would both read its "
                                        r"column 'text'"):
        labels(label_column="text")
    ud = TagConfig(data="ud_en_ewt", tag_column="xpos")
    first = next(data_files.iter_part(ud, "test", ("token_column", "tag_column"),
                                      lambda r: " ".join(r["tokens"])))[1]
    assert (first["tokens"][:3], first["tags"][:3]) == (["What", "if", "Google"],
                                                        ["WP", "IN", "NNP"])  # XPOS, not UPOS


def test_held_out_validation_is_seeded_and_disjoint(tmp_path):
    class Config:
        data = str(tmp_path / "a.csv")
        validation_data = test_data = ""
        validation_fraction = 0.25
        seed = 3
        text_column, label_column = "text", "label"

    (tmp_path / "a.csv").write_text("text,label\n" + "".join(f"t{i},x\n" for i in range(400)))
    fields = ("text_column", "label_column")

    def part(name):
        return [row["text"] for _, row in data_files.iter_part(Config, name, fields,
                                                                lambda r: r["text"])]

    train, val = part("train"), part("validation")
    assert not set(train) & set(val) and len(train) + len(val) == 400
    assert 60 < len(val) < 140
    assert part("validation") == val
    Config.seed = 4
    assert part("validation") != val
    with pytest.raises(UserError, match="no test data"):
        part("test")
    # Rows of one text go together: three distinct texts (seed 3 holds out none of them)
    # leave the validation part empty, which is said, with the way out.
    (tmp_path / "a.csv").write_text("text,label\n" + "".join(f"t{i % 3},x\n" for i in range(300)))
    Config.seed = 3
    assert len(part("train")) == 300
    with pytest.raises(UserError, match=r"picked none of its 300 rows .* --validation-data"):
        part("validation")


def test_data_prepare_reads_file_based_sets_end_to_end(shared_data, capsys):
    from app.cli import main

    assert main(["data", "prepare", "trec"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "classify" and summary["splits"] == {"train": 5452, "test": 500}
    assert main(["data", "prepare", "ud_en_ewt"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == {"train": 12543, "validation": 2001, "test": 2077}
    assert main(["data", "list"]) == 0
    assert {"trec", "ud_en_ewt", "wikitext2", "imdb"} <= set(capsys.readouterr().out.split())
