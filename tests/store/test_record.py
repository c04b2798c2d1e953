"""Recording a code store: the documented schema (read by pyarrow and DuckDB), exact character
offsets for byte-level BPE and multi-byte characters, the same codes as running the model
directly, resuming after a kill, ownership of the directory, the command line, and two
processes recording one store."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.cli import main
from codebook_features.persist.files import MANIFEST
from codebook_features.store import record as record_module
from codebook_features.store.index import index_is_current
from codebook_features.store.record import RecordConfig, ShardInfo, record
from codebook_features.store.schema import SCHEMA_VERSION, id_dtype
from tests.model_zoo import TINY_NEOX
from tests.store.synthetic import reindex

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

WORDS = [
    "the", "of", "café", "naïve", "über", "straße", "日本語", "テキスト", "emoji", "😀", "👍🏽",
    "dragon", "king", "of the king", "über-café", "x🙂y", "crème", "brûlée", "mat", "sat", "on",
]  # fmt: skip
SITES = ["layers.0.attn_heads", "layers.0.mlp", "layers.1.attn_heads", "layers.1.mlp"]
MAX_LENGTH = 16


def corpus_rows(count: int = 30, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 40))]
        text = "" if i == 7 else " ".join(words) + rng.choice(["", ".", "\n", "  !"])
        rows.append({"text": text, "label": i % 3, "topic": "abc"[i % 3], "tags": words[:2]})
    return rows


def byte_level_tokenizer(lines: list[str]):
    """A byte-level BPE trained here; merges may cross spaces (no pre-splitting)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=330,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    core.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    root = tmp_path_factory.mktemp("record")
    rows = corpus_rows()
    tokenizer = byte_level_tokenizer([r["text"] for r in rows] * 20 + ["of the king"] * 200)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(**TINY_NEOX, vocab_size=len(tokenizer))
    )
    config = CodebookModelConfig(
        sites=["attn_heads", "mlp"], num_codes=200, k=2, per_site={"mlp": {"num_codes": 100}}
    )
    CodebookModel(model, config).save(root / "model", tokenizer=tokenizer)
    with open(root / "corpus.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    lines = [r["text"].replace("\n", " ") for r in rows if r["text"]]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    return root


def settings(world: Path, out: Path, **extra: object) -> RecordConfig:
    base = {
        "model": str(world / "model"),
        "dataset": str(world / "corpus.jsonl"),
        "output_dir": str(out),
        "max_length": MAX_LENGTH,
        "batch_size": 4,
        "shard_tokens": 150,
        "activation_sites": ["layers.0.mlp"],
        "max_activation_tokens": 200,
        "progress": False,
        "device": "cpu",  # the same numbers as the direct runs below, on any machine
    }
    return RecordConfig(**(base | extra))


@pytest.fixture(scope="module")
def store(world: Path) -> Path:
    record(settings(world, world / "store"))
    return world / "store"


def manifest_of(store: Path) -> dict:
    return json.loads((store / MANIFEST).read_text())


def tables(store: Path, kind: str) -> pa.Table:
    shards = manifest_of(store)["shards"]
    return pa.concat_tables(pq.read_table(store / "shards" / s[kind]) for s in shards)


def contents(store: Path) -> dict[str, bytes]:
    """Every file of a store but its progress and marker files."""
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.parts[-2] != "progress" and not p.name.startswith(".")
    }


# ---------------------------------------------------------------------------- the format
def test_the_store_names_its_model_as_concepts_do(world: Path, store: Path, tmp_path) -> None:
    """One fingerprint: the manifest's is the codebooks' fingerprint a concept records, so a
    store, a concept and a model can be matched; a store of format 1 (the sha256 of the saved
    codebook files) is still checked against the model by that."""
    import hashlib

    from codebook_features.attach.fingerprint import codebooks_fingerprint
    from codebook_features.store.model_loading import check_recorded_with
    from codebook_features.store.reader import CodeStore

    cbm = CodebookModel.from_pretrained(world / "model")
    copy = tmp_path / "store"  # its manifest is edited below: the shared store stays as it is
    shutil.copytree(store, copy)
    reader = CodeStore(copy)
    assert reader.manifest.model.fingerprint == codebooks_fingerprint(cbm)
    check_recorded_with(reader, cbm, str(world / "model"))
    changed = CodebookModel.from_pretrained(world / "model")
    with torch.no_grad():
        next(changed.codebooks.parameters()).add_(1.0)
    with pytest.raises(CodebookError, match=r"is not the model .* was recorded with"):
        check_recorded_with(reader, changed, "changed")
    old = tmp_path / "old-store"
    shutil.copytree(store, old)
    manifest = manifest_of(old)
    files = (world / "model" / "codebook_config.json", world / "model" / "codebooks.safetensors")
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    manifest |= {"schema_version": 1, "model": manifest["model"] | {"fingerprint": digest}}
    (old / "manifest.json").write_text(json.dumps(manifest))
    reindex(old)
    check_recorded_with(CodeStore(old), cbm, str(world / "model"))
    changed.save(tmp_path / "changed")
    with pytest.raises(CodebookError, match="is not the model"):
        check_recorded_with(CodeStore(old), changed, str(tmp_path / "changed"))


def test_manifest_and_schema(store: Path) -> None:
    manifest = manifest_of(store)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["codebook_features_version"]
    assert list(manifest["sites"]) == SITES
    assert manifest["sites"]["layers.0.mlp"] == {
        "groups": 1, "k": 2, "num_codes": 100, "dtype": "int8"
    }  # fmt: skip
    assert manifest["sites"]["layers.1.attn_heads"] == {
        "groups": 4, "k": 2, "num_codes": 200, "dtype": "int16"
    }  # fmt: skip
    assert len(manifest["model"]["fingerprint"]) == 64
    assert manifest["data"]["label_fields"] == ["label", "topic"]  # "tags" is a list
    assert manifest["counts"]["documents"] == 30
    assert len(manifest["shards"]) > 2
    assert [s["shard"] for s in manifest["shards"]] == list(range(len(manifest["shards"])))
    listed = {f"shards/{s[k]}" for s in manifest["shards"] for k in ("documents", "tokens")}
    listed |= {f"activations/{f['file']}" for f in manifest["activations"]["files"]}
    assert set(manifest["files"]) == listed

    tokens = pq.read_schema(store / "shards" / manifest["shards"][0]["tokens"])
    assert tokens.names == ["document", "position", "token", "start", "end", *SITES]
    kinds = [str(tokens.field(n).type) for n in ("document", "position", "token", "start", "end")]
    assert kinds == ["int64", "int32", "int32", "int32", "int32"]
    for site, info in manifest["sites"].items():
        kind = tokens.field(site).type
        assert pa.types.is_fixed_size_list(kind)
        assert kind.list_size == info["groups"] * info["k"]
        assert kind.value_type == pa.from_numpy_dtype(id_dtype(info["num_codes"]))
    documents = pq.read_schema(store / "shards" / manifest["shards"][0]["documents"])
    assert documents.names == ["document", "text", "label", "topic"]
    assert str(documents.field("document").type) == "int64"

    counts = manifest["counts"]
    table = tables(store, "tokens")
    assert table.num_rows == counts["tokens"] == sum(s["tokens_count"] for s in manifest["shards"])
    keys = list(zip(table["document"].to_pylist(), table["position"].to_pylist(), strict=True))
    assert keys == sorted(keys)  # rows in (document, position) order, shards in order
    docs = tables(store, "documents")
    assert docs["document"].to_pylist() == list(range(30))
    rows = corpus_rows()
    assert docs["text"].to_pylist() == [r["text"] for r in rows]
    assert docs["topic"].to_pylist() == [r["topic"] for r in rows]


def test_duckdb_reads_the_shards(store: Path) -> None:
    tokens, documents = (
        store / "shards" / "tokens-*.parquet",
        store / "shards" / "documents-*.parquet",
    )
    manifest = manifest_of(store)
    count, docs, top = duckdb.sql(
        f"select count(*), count(distinct document), max(position) from '{tokens}'"
    ).fetchall()[0]
    assert count == manifest["counts"]["tokens"] and top >= MAX_LENGTH  # windows go on
    assert docs == 29  # document 7 is empty: it has no tokens
    # the offsets count characters, as SQL does: token text by SQL equals the text by Python
    pieces = duckdb.sql(
        f"""select t.document, t.position, substring(d.text, t.start + 1, t."end" - t.start)
            from '{tokens}' t join '{documents}' d using (document) order by all"""
    ).fetchall()
    texts = dict(duckdb.sql(f"select document, text from '{documents}'").fetchall())
    starts = duckdb.sql(f"""select start, "end" from '{tokens}' order by document, position""")
    assert len(pieces) == count and any("é" in piece for _, _, piece in pieces)
    for (document, _, piece), (start, end) in zip(pieces, starts.fetchall(), strict=True):
        assert piece == texts[document][start:end]
    first = duckdb.sql(f"select \"layers.1.attn_heads\" from '{tokens}' limit 1").fetchall()[0][0]
    assert len(first) == 8
    labels = duckdb.sql(
        f"select label, count(*) from '{documents}' group by label order by label"
    ).fetchall()
    assert labels == [(0, 10), (1, 10), (2, 10)]


def test_offsets_are_exact_characters(world: Path, store: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world / "model")
    texts = dict(
        zip(*(tables(store, "documents")[c].to_pylist() for c in ("document", "text")), strict=True)
    )
    table = tables(store, "tokens")
    rows = zip(*(table[c].to_pylist() for c in ("document", "token", "start", "end")), strict=True)
    by_document: dict[int, list[tuple[int, int, int]]] = {}
    for document, token, start, end in rows:
        by_document.setdefault(document, []).append((token, start, end))
    split, spaced = 0, 0
    for document, tokens in by_document.items():
        text = texts[document]
        assert [t for t, _, _ in tokens] == tokenizer(text, add_special_tokens=False)["input_ids"]
        # tokens cover the text in order; tokens holding parts of one character share it
        groups: list[list[tuple[int, int, int]]] = []
        for token in tokens:
            if groups and token[1] < groups[-1][-1][2]:
                groups[-1].append(token)
            else:
                assert not groups or token[1] == groups[-1][-1][2]
                groups.append([token])
        assert groups[0][0][1] == 0 and groups[-1][-1][2] == len(text)
        for group in groups:
            start, end = group[0][1], max(t[2] for t in group)
            ids = [t for t, _, _ in group]
            assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text[start:end]
            if len(group) > 1:
                split += 1
            for token, s, e in group:
                piece = tokenizer.decode([token], clean_up_tokenization_spaces=False)
                if "\ufffd" not in piece:  # a whole character or more
                    assert piece == text[s:e]
                    spaced += " " in piece.strip()
    assert split > 0, "no multi-byte character was split into several tokens"
    assert spaced > 0, "no token merged words across a space"


def test_codes_equal_a_direct_run_of_the_same_windows(world: Path, store: Path) -> None:
    cbm = CodebookModel.from_pretrained(world / "model").eval()
    table = tables(store, "tokens")
    documents = table["document"].to_numpy()
    stored = {site: np.stack(table[site].to_numpy(zero_copy_only=False)) for site in SITES}
    ids = table["token"].to_numpy()
    for document in np.unique(documents):
        rows = np.flatnonzero(documents == document)
        for first in range(0, len(rows), MAX_LENGTH):
            window = rows[first : first + MAX_LENGTH]
            with torch.no_grad(), cbm.observe(SITES) as seen:
                cbm.model(input_ids=torch.from_numpy(ids[window].astype(np.int64))[None])
            for site in SITES:
                direct = seen[site][0].reshape(len(window), -1).numpy()
                assert (stored[site][window] == direct).all(), (site, document, first)


def test_activations_are_the_first_tokens_inputs(world: Path, store: Path) -> None:
    from safetensors.numpy import load_file

    manifest = manifest_of(store)
    info = manifest["activations"]
    assert info["sites"] == {"layers.0.mlp": {"dim": 32}} and info["dtype"] == "float16"
    assert info["tokens"] == 200 == sum(f["rows"] for f in info["files"])
    parts = [load_file(store / "activations" / f["file"])["layers.0.mlp"] for f in info["files"]]
    kept = np.concatenate(parts)
    assert kept.dtype == np.float16 and kept.shape == (200, 32)
    assert [f["shard"] for f in info["files"]] == list(range(len(info["files"])))
    cbm = CodebookModel.from_pretrained(world / "model").eval()
    table = tables(store, "tokens")
    documents, ids = table["document"].to_numpy(), table["token"].to_numpy()
    expected = []
    for document in np.unique(documents[:200]):  # whole documents, then the first 200 rows
        rows = np.flatnonzero(documents == document)
        for first in range(0, len(rows), MAX_LENGTH):
            window = torch.from_numpy(ids[rows[first : first + MAX_LENGTH]].astype(np.int64))
            with torch.no_grad(), cbm.observe(["layers.0.mlp"], ids=False, inputs=True) as seen:
                cbm.model(input_ids=window[None])
            expected.append(seen.inputs["layers.0.mlp"][0].half().numpy())
    np.testing.assert_array_equal(kept, np.concatenate(expected)[:200])


def test_streaming_and_small_row_groups_give_the_same_rows(
    world: Path, store: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(record_module, "ROW_GROUP_TOKENS", 50)
    record(settings(world, tmp_path / "stream", streaming=True))
    manifest = manifest_of(tmp_path / "stream")
    assert (
        pq.ParquetFile(
            tmp_path / "stream" / "shards" / manifest["shards"][0]["tokens"]
        ).num_row_groups
        > 2
    )
    assert tables(tmp_path / "stream", "tokens").equals(tables(store, "tokens"))
    assert tables(tmp_path / "stream", "documents").equals(tables(store, "documents"))


def test_text_files_and_chosen_labels(world: Path, tmp_path: Path) -> None:
    result = record(
        settings(world, tmp_path / "txt", dataset=str(world / "corpus.txt"), activation_sites=[])
    )
    manifest = manifest_of(tmp_path / "txt")
    assert manifest["data"]["split"] is None and manifest["activations"] is None
    assert result.documents == 29 and result.shards == len(manifest["shards"])
    assert tables(tmp_path / "txt", "documents").column_names == ["document", "text"]
    record(
        settings(world, tmp_path / "one", label_fields=["topic"], max_documents=5, sites=["mlp"])
    )
    manifest = manifest_of(tmp_path / "one")
    assert list(manifest["sites"]) == ["layers.0.mlp", "layers.1.mlp"]
    assert manifest["counts"]["documents"] == 5
    assert tables(tmp_path / "one", "documents").column_names == ["document", "text", "topic"]
    assert settings(world, tmp_path / "x").label_fields == "all"  # every scalar column
    assert settings(world, tmp_path / "x", label_fields=None).label_fields == "all"
    record(settings(world, tmp_path / "none", label_fields="none", max_documents=5))
    assert manifest_of(tmp_path / "none")["data"]["label_fields"] == []
    assert tables(tmp_path / "none", "documents").column_names == ["document", "text"]


# ---------------------------------------------------------------------------- resuming
def test_resume_after_a_kill_equals_an_uninterrupted_recording(
    world: Path, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"

    def stop(info: ShardInfo) -> None:
        if info.shard == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record(settings(world, out), on_shard=stop)
    assert not (out / MANIFEST).exists()
    progress = json.loads((out / "progress" / "rank-00000.json").read_text())
    assert [s["shard"] for s in progress["shards"]] == [0, 1] and not progress["finished"]
    # a kill can also leave a temporary file and a shard renamed before its progress was saved
    (out / "shards" / ".tokens-00000-00002.parquet.x.tmp").write_bytes(b"half")
    (out / "shards" / "tokens-00000-00002.parquet").write_bytes(b"unlisted")
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*-0000[01].parquet")}
    result = record(settings(world, out))
    assert contents(out) == contents(store)
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*-0000[01].parquet")}
    assert kept == finished  # finished shards are not written again
    assert result.tokens == manifest_of(store)["counts"]["tokens"]
    # a finished store: the same settings change nothing, other ones are refused
    again = record(settings(world, out))
    assert contents(out) == contents(store) and again.tokens == result.tokens
    with pytest.raises(CodebookError, match=r"other settings \(batch_size differ\)"):
        record(settings(world, out, batch_size=2))
    assert contents(out) == contents(store)


# ---------------------------------------------------------------------------- ownership
def snapshot(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_foreign_directories_and_files_are_refused_untouched(world: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "shards").mkdir(parents=True)
    (foreign / "shards" / "mine.parquet").write_bytes(b"my data")
    (foreign / "notes.txt").write_text("keep")
    before = snapshot(foreign)
    for overwrite in (False, True):
        with pytest.raises(CodebookError, match=r"not marked|not made by"):
            record(settings(world, foreign, overwrite=overwrite))
    assert snapshot(foreign) == before
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(CodebookError, match="is a file"):
        record(settings(world, afile))
    assert afile.read_text() == "x"


def test_overwrite_replaces_only_a_store_of_our_own(
    world: Path, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    record(settings(world, out, shard_tokens=10_000, activation_sites=[]))
    assert len(manifest_of(out)["shards"]) == 1
    with pytest.raises(CodebookError, match="other settings"):
        record(settings(world, out))
    (out / "index" / "document.npy").write_bytes(b"index")  # the index is the store's own
    record(settings(world, out, overwrite=True))
    assert contents(out) == contents(store)
    (out / "shards" / "mine.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(
        CodebookError, match=r"also holds files it did not make \(shards/mine.txt\)"
    ):
        record(settings(world, out, overwrite=True, batch_size=2))
    assert snapshot(out) == before


def test_a_slow_tokenizer_is_refused(world: Path, tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoTokenizer

    load = AutoTokenizer.from_pretrained

    class Slow:
        is_fast = False

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: (load(*a, **k), Slow)[1])
    with pytest.raises(CodebookError, match=r"slow .* gives no character offsets"):
        record(settings(world, tmp_path / "slow"))
    assert not (tmp_path / "slow").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size: input should be greater than or equal to 1, got 0"),
        ("batch_size", True, "batch_size: expected a whole number, not true or false"),
        ("max_documents", -1, "max_documents: input should be greater than or equal to 1"),
        ("label_fields", ["text"], "label_fields may not name text"),
        ("label_fields", ["label", "label"], "label_fields: names label twice"),
        ("sites", [], "sites: list should have at least 1 item"),
        ("model", "", "model: string should have at least 1 character"),
        ("model", None, "model: input should be a valid string"),
        ("device", "tpu", "device: input should be 'auto', 'cpu' or 'cuda', got 'tpu'"),
    ],
)
def test_settings_are_checked(world: Path, tmp_path: Path, field, value, message) -> None:
    with pytest.raises(CodebookError, match=message):
        settings(world, tmp_path / "s", **{field: value})


# ---------------------------------------------------------------------------- command line
def test_record_command(world: Path, store: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "record.yaml"
    values = {k: v for k, v in settings(world, tmp_path / "cli").to_dict().items() if v is not None}
    config.write_text(yaml.safe_dump(values | {"batch_size": 2}))
    assert main(["record", "--config", str(config), "--batch_size", "4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    tokens = manifest_of(store)["counts"]["tokens"]
    assert len(out) == 1 and out[0].startswith(f"recorded 30 documents, {tokens} tokens in ")
    assert "tokens/s" in out[0] and out[0].endswith(str(tmp_path / "cli"))
    assert contents(tmp_path / "cli") == contents(store)
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    assert "--config" in text
    for name, field in RecordConfig.model_fields.items():
        assert f"--{name}" in text
        assert field.description, f"{name} has no description"
        assert "".join(field.description.replace("``", "").split()) in text, f"{name} undocumented"


CLI_MISTAKES = [
    ([], "model is required"),
    (["--model", "{root}/nowhere/model"], "does not exist"),
    (["--model", "{root}/corpus.txt"], "is a file"),
    (["--dataset", "{root}/missing.jsonl"], "data file {root}/missing.jsonl does not exist"),
    (["--sites", "heads"], "heads"),
    (["--text_field", "body"], "no column 'body'"),
    (["--label_fields", "genre"], "no column 'genre'"),
    (["--label_fields", "tags"], "does not hold one number or string"),
    (["--max_length", "500"], "longer than the model's context"),
    (["--batch_size", "0"], "batch_size: input should be greater than or equal to 1, got '0'"),
    (["--output_dir", "{root}/corpus.txt"], "is a file"),
    (["--output_dir", "{root}"], "not made by codebook-features"),
    (["--streaming", "maybe"], "streaming: input should be a valid boolean"),
    (["--config", "{root}/nowhere.yaml"], "does not exist"),
]


@pytest.mark.parametrize(("extra", "message"), CLI_MISTAKES)
def test_mistakes_get_one_line_and_change_nothing(world, tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "out"
    base = {
        "--model": str(world / "model"),
        "--dataset": str(world / "corpus.jsonl"),
        "--output_dir": str(out),
        "--progress": "false",
    }
    if extra:
        base = {**base, extra[0]: None}
    argv = ["record", *(x for k, v in base.items() if v is not None for x in (k, v))]
    argv += [part.format(root=world) for part in extra]
    before = snapshot(world)
    try:
        code = main(argv if extra else ["record", "--output_dir", str(out)])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert message.format(root=world) in lines[0], lines[0]
    assert snapshot(world) == before
    assert not out.exists()


# ---------------------------------------------------------------------------- processes
@pytest.mark.slow
def test_two_processes_record_one_store(world: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    record(settings(world, single, batch_size=1, shard_tokens=200))
    out = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29531",
            "-m",
            "codebook_features",
            "record",
            "--model",
            str(world / "model"),
            "--dataset",
            str(world / "corpus.jsonl"),
            "--output_dir",
            str(out),
            "--max_length",
            str(MAX_LENGTH),
            "--batch_size",
            "1",
            "--shard_tokens",
            "200",
            "--activation_sites",
            "layers.0.mlp",
            "--max_activation_tokens",
            "200",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("recorded 30 documents") == 1
    manifest = manifest_of(out)
    ranks = [s["rank"] for s in manifest["shards"]]
    assert set(ranks) == {0, 1} and ranks == sorted(ranks)
    assert manifest["recording"]["processes"] == 2
    assert index_is_current(out)  # written by the first process once every shard was there
    assert {s["tokens"] for s in manifest["shards"]} >= {
        "tokens-00000-00000.parquet",
        "tokens-00001-00000.parquet",
    }
    assert set(manifest["files"]) == {
        f"shards/{s[k]}" for s in manifest["shards"] for k in ("documents", "tokens")
    } | {f"activations/{f['file']}" for f in manifest["activations"]["files"]}
    documents = tables(out, "documents")
    for rank in (0, 1):
        mine = [
            pq.read_table(out / "shards" / s["documents"])["document"].to_pylist()
            for s in manifest["shards"]
            if s["rank"] == rank
        ]
        assert all(d % 2 == rank for part in mine for d in part)
    assert sorted(documents["document"].to_pylist()) == list(range(30))
    order = "document,position"
    both = tables(out, "tokens").sort_by([(c, "ascending") for c in order.split(",")])
    assert both.equals(tables(single, "tokens"))
    assert manifest["counts"] == manifest_of(single)["counts"]
    assert manifest["activations"]["tokens"] == 400  # each process keeps its first 200


def test_offsets_keep_leading_spaces_with_a_trimming_post_processor(
    world: Path, tmp_path: Path
) -> None:
    """Tokenizers like Pythia's trim the leading space off offsets in their post-processor;
    the store's offsets still cover each token's exact characters."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world / "model")
    tokenizer.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    tokenizer.save_pretrained(tmp_path / "trimming")
    record(settings(world, tmp_path / "store", tokenizer=str(tmp_path / "trimming")))
    texts = dict(
        zip(
            *(tables(tmp_path / "store", "documents")[c].to_pylist() for c in ("document", "text")),
            strict=True,
        )
    )
    table = tables(tmp_path / "store", "tokens")
    spaced = 0
    for document, token, start, end in zip(
        *(table[c].to_pylist() for c in ("document", "token", "start", "end")), strict=True
    ):
        piece = tokenizer.decode([token], clean_up_tokenization_spaces=False)
        if piece.startswith(" ") and "\ufffd" not in piece:
            assert texts[document][start:end] == piece
            spaced += 1
    assert spaced > 0


def test_a_corpus_edited_in_place_is_not_continued(world: Path, tmp_path: Path) -> None:
    """The same file name and size, other text: a stopped recording does not continue over it
    (the first shards would hold the old text, the rest the new)."""
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(world / "corpus.jsonl", corpus)
    out = tmp_path / "stopped"

    def stop(info: ShardInfo) -> None:
        if info.shard == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record(settings(world, out, dataset=str(corpus)), on_shard=stop)
    data = bytearray(corpus.read_bytes())
    last = data.rindex(b'"text"')  # a letter of the last document's text, in another case
    letter = next(i for i in range(last + 8, len(data)) if chr(data[i]).isalpha())
    data[letter] = ord(chr(data[letter]).swapcase())
    size = corpus.stat().st_size
    corpus.write_bytes(bytes(data))
    assert corpus.stat().st_size == size
    with pytest.raises(CodebookError, match=r"other settings \(data_files differ\)"):
        record(settings(world, out, dataset=str(corpus)))


def test_a_stopped_recording_continues_whatever_the_spelling_of_its_paths(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with absolute paths, continued from the data's folder with relative ones."""
    shutil.copy(world / "corpus.jsonl", tmp_path / "corpus.jsonl")
    out = tmp_path / "stopped"

    def stop(info: ShardInfo) -> None:
        if info.shard == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record(settings(world, out, dataset=str(tmp_path / "corpus.jsonl")), on_shard=stop)
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*-0000[01].parquet")}
    monkeypatch.chdir(tmp_path)
    record(settings(world, Path("stopped"), dataset="./corpus.jsonl"))

    def shards(store: Path) -> dict[str, bytes]:
        return {k: v for k, v in contents(store).items() if k.startswith("shards/")}

    assert shards(out) == shards(world / "store")
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*-0000[01].parquet")}
    assert kept == finished  # continued, not recorded again


def test_a_document_without_text_is_recorded_empty_and_said(
    world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"text": "the sea"}, {"label": "x"}, {"text": "a ship"}, {"text": None}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING"):
        result = record(
            settings(
                world, tmp_path / "s", dataset=str(tmp_path / "rows.jsonl"), activation_sites=[]
            )
        )
    assert result.documents == 4
    assert "document 1 has no 'text' (null): recorded as an empty document" in caplog.text
    assert "2 documents had no 'text'" in caplog.text
