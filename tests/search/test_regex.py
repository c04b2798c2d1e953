"""Regex -> codes, on a store with planted codes."""

import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from codebook_features import CodebookError
from codebook_features.attach.code_ref import CodeRef
from codebook_features.search import regex_codes, regex_token_rows
from codebook_features.search.regex import MAX_WRITTEN_OUT, written_out_size
from codebook_features.store.reader import CodeStore
from tests.store.synthetic import DRAGON, SITES, write_store


@pytest.fixture
def store(tmp_path) -> CodeStore:
    return CodeStore(write_store(tmp_path / "store"))


def test_planted_code_is_found_with_precision_and_recall_one(store) -> None:
    ranked, positives = regex_codes(store, r"dragon")
    best = ranked[0]
    assert best.code == CodeRef("layers.0.mlp", 0, DRAGON)
    assert (best.precision, best.recall) == (1.0, 1.0)
    assert best.support == best.hits == positives > 0
    assert len({e.document for e in best.examples}) == len(best.examples) >= 2
    assert all("[[ dragon]]" in e.context for e in best.examples)
    slow = [r for r in range(store.num_tokens) if store.token_text(r).strip() == "dragon"]
    assert positives == len(slow)


def test_capture_group_labels_only_its_tokens(store) -> None:
    whole = regex_token_rows(store, r"red dragon")
    group = regex_token_rows(store, r"red (dragon)")
    assert len(whole) == 2 * len(group) > 0  # a pattern spanning two tokens
    assert all(store.token_text(r).strip() == "dragon" for r in group)
    assert np.isin(group, whole).all()


def test_multi_byte_characters_align(store) -> None:
    rows = regex_token_rows(store, "本")  # one character of a two-character word
    assert len(rows) and all(store.token_text(r).strip() == "日本" for r in rows)
    rows = regex_token_rows(store, r"é\b")
    assert len(rows) and all(store.token_text(r).strip() == "café" for r in rows)


def test_thresholds_sort_and_site_filter(store) -> None:
    ranked, _ = regex_codes(store, "dragon", sites="layers.1.*", min_support=1)
    assert ranked and all(s.code.site == "layers.1.attn_heads" for s in ranked)
    ranked, _ = regex_codes(store, "dragon", min_precision=0.99, min_support=3, sort="precision")
    assert [str(s.code) for s in ranked] == [f"layers.0.mlp/0/{DRAGON}"]
    assert regex_codes(store, "unicorn") == ([], 0)
    with pytest.raises(CodebookError, match="not a valid regular expression"):
        regex_codes(store, "(dragon")
    with pytest.raises(CodebookError, match="no site matches"):
        regex_codes(store, "dragon", sites="layers.9.*")


@pytest.mark.parametrize("sort", ["f1", "precision", "recall"])
def test_ranking_equals_a_slow_scan_of_every_code(store, sort) -> None:
    from codebook_features.search import score_codes

    positive = regex_token_rows(store, r"\b(dragon|town)\b")
    ranked = score_codes(store, positive, sort=sort, top=None, examples=0, min_support=2)
    slow = []
    for site, (groups, _, num_codes) in SITES.items():
        ids = np.asarray(store.ids(site))
        for group in range(groups):
            for code in range(num_codes):
                fires = np.flatnonzero((ids[:, group] == code).any(-1))
                hits = len(np.intersect1d(fires, positive))
                if hits and len(fires) >= 2:
                    p, r = hits / len(fires), hits / len(positive)
                    f1 = 2 * p * r / (p + r)
                    key = {"f1": (f1, p, r), "precision": (p, r), "recall": (r, p)}[sort]
                    slow.append(((*(-v for v in key), site, group, code), (p, r, len(fires))))
    slow.sort(key=lambda entry: entry[0])
    assert [(s.code.site, s.code.group, s.code.id) for s in ranked] == [e[0][-3:] for e in slow]
    assert [(s.precision, s.recall, s.support) for s in ranked] == [e[1] for e in slow]


def test_search_command(tmp_path, capsys) -> None:
    import json

    from codebook_features.cli import main

    root = write_store(tmp_path / "store")
    assert main(["search", "regex", "--store", str(root), "--pattern", "dragon", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["codes"][0]["code"] == f"layers.0.mlp/0/{DRAGON}"
    assert result["codes"][0]["precision"] == 1.0 and result["tokens"] > 0
    assert main(["search", "regex", "--store", str(root), "--pattern", "dragon", "--top", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith(f"layers.0.mlp/0/{DRAGON} ") and len(table) == 4
    assert main(["search", "regex", "--store", str(tmp_path), "--pattern", "x"]) == 2
    assert "not a finished code store" in capsys.readouterr().err
    for option, value, message in (
        ("--min_precision", "2", "min_precision: input should be less than or equal to 1"),
        ("--top", "0", "top: input should be greater than or equal to 1, got '0'"),
        ("--sort", "support", "sort: input should be 'f1', 'precision' or 'recall'"),
        ("--nothing", "1", "unrecognized arguments: --nothing"),
    ):
        argv = ["search", "regex", "--store", str(root), "--pattern", "x", option, value]
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse's own errors exit
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err, err
        assert len(err.splitlines()) == 1, err
    assert main(["search", "regex", "--store", str(root)]) == 2
    assert capsys.readouterr().err == "error: pattern is required\n"


@pytest.mark.parametrize("query", ["regex", "token", "topics", "code", "baselines"])
def test_search_help_documents_every_setting(capsys, query) -> None:
    from codebook_features.cli import main
    from codebook_features.search.cli import QUERIES

    with pytest.raises(SystemExit):
        main(["search", query, "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    for name, field in QUERIES[query][0].model_fields.items():
        assert f"--{name}" in text
        assert field.description, f"{name} has no description"
        assert "".join(field.description.replace("``", "").split()) in text, f"{name} undocumented"
    assert "--json" in text


def test_search_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, contextlib; from codebook_features.cli import main\n"
        "with contextlib.suppress(SystemExit): main(['search', 'regex', '--help'])\n"
        "heavy = ('torch', 'numpy', 'pyarrow', 'duckdb', 'transformers', 'fastapi')\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_token_overlap_by_binary_search_equals_a_scan() -> None:
    from codebook_features.search.regex import _overlapping

    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, 4, size=30)  # some tokens cover no character
        ends = np.cumsum(lengths)
        starts = ends - lengths
        begins = rng.integers(0, ends[-1] + 2, size=rng.integers(1, 6))
        spans = [(int(b), int(b + rng.integers(1, 8))) for b in begins]
        slow = np.zeros(30, dtype=bool)
        for begin, stop in spans:
            slow |= (ends > begin) & (starts < stop) & (ends > starts)
        assert np.array_equal(_overlapping(starts, ends, spans), slow)
        shuffled = rng.permutation(30)  # offsets out of order take the plain scan
        assert np.array_equal(_overlapping(starts[shuffled], ends[shuffled], spans), slow[shuffled])


def test_compiled_patterns_keep_their_flags(store) -> None:
    ascii_words = regex_token_rows(store, re.compile(r"\w+", re.ASCII))
    assert np.array_equal(ascii_words, regex_token_rows(store, r"(?a)\w+"))
    assert not np.array_equal(ascii_words, regex_token_rows(store, r"\w+"))  # café, 日本
    loud = regex_token_rows(store, re.compile("DRAGON", re.IGNORECASE))
    assert len(loud) and np.array_equal(loud, regex_token_rows(store, "dragon"))


def test_a_search_past_its_time_limit_is_refused(store) -> None:
    with pytest.raises(CodebookError, match="took longer than"):
        regex_token_rows(store, r"\w", time_limit=1e-9)  # cheap, but everywhere
    assert len(regex_token_rows(store, r"\w", time_limit=60))


def test_patterns_that_unroll_past_the_limit_are_refused_before_compiling(store) -> None:
    assert written_out_size(r"\bdragons?\b") == 9
    assert written_out_size(r"[a-z]{3}-\d{2,4}") == 3 + 1 + 4
    assert written_out_size(r"(ab){2,3}") == 6 and written_out_size(r"x{,5}") == 5
    assert written_out_size("a{}") == 3  # not a count: literal braces
    assert written_out_size(r"(?P<w>a){20000}") == 20000  # a group's prefix is no atom
    bomb = r"(?:a{3000}){3000}"
    assert written_out_size(bomb) > MAX_WRITTEN_OUT
    for hidden in (
        r"(?#[)(?:a{3000}){3000}]",  # a bracket in a comment does not hide the rest
        "(?x)#[\n(?:a{3000}){3000}#]",  # nor one in a verbose-mode comment
        r"[(?:a{3000}){3000}",  # nor an unclosed class
    ):
        assert written_out_size(hidden) > MAX_WRITTEN_OUT, hidden
    with pytest.raises(CodebookError, match="too large to compile"):
        regex_token_rows(store, "a{" + "9" * 5000 + "}")  # a count too long for int()
    with pytest.raises(CodebookError, match="too large to compile"):
        regex_token_rows(store, bomb)  # refused by its size, before compiling it takes seconds
    assert len(regex_token_rows(store, r"(?:dragon ){1,3}")) > 0  # modest counts still work


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_the_time_limit_is_wall_clock_time(store) -> None:
    """On a busy machine CPU time runs slower than the clock: here three busy processes share
    the search's one core, so a limit counted in CPU time would answer after about four times
    its length. The answer must come at the limit, and the abandoned search must end."""
    core, before = min(os.sched_getaffinity(0)), os.sched_getaffinity(0)
    busy: list[subprocess.Popen] = []
    try:
        for _ in range(3):
            busy.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
            os.sched_setaffinity(busy[-1].pid, {core})
        os.sched_setaffinity(0, {core})
        began = time.monotonic()
        with pytest.raises(CodebookError, match="took longer than 1 s"):
            regex_token_rows(store, r"(?:.|..)*\d" * 3, time_limit=1.0)  # backtracks everywhere
        waited = time.monotonic() - began
    finally:
        os.sched_setaffinity(0, before)
        for process in busy:
            process.kill()
            process.wait()
    assert waited < 2.5, f"refused after {waited:.1f} s of wall-clock time"
    for thread in threading.enumerate():
        if thread.name == "regex search":
            thread.join(30)
            assert not thread.is_alive(), "the abandoned search did not end"
