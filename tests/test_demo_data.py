"""Invariants of the built-in demo collection (data/demo, BEIR layout).

Plain json/csv checks; no project imports, so this runs even if the package is broken.
"""
from __future__ import annotations

import csv
import json
import pathlib
from collections import Counter, defaultdict

import pytest

DEMO = pathlib.Path(__file__).resolve().parents[1] / "data" / "demo"

MIN_DOCS, MIN_QUERIES, MIN_TOPICS = 150, 40, 8
# minimum number of judged passages per query, per grade
MIN_PER_GRADE = {2: 1, 1: 2, 0: 2}


def _jsonl(path: pathlib.Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:  # pragma: no cover - reported as failure
                pytest.fail(f"{path.name}:{n}: invalid JSON ({e})")
    return rows


def _tsv(path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return _jsonl(DEMO / "corpus.jsonl")


@pytest.fixture(scope="module")
def queries() -> list[dict]:
    return _jsonl(DEMO / "queries.jsonl")


@pytest.fixture(scope="module")
def qrels() -> list[tuple[str, str, int]]:
    header, rows = _tsv(DEMO / "qrels" / "test.tsv")
    assert header == ["query-id", "corpus-id", "score"]
    out = []
    for r in rows:
        assert len(r) == 3, f"bad qrels row {r!r}"
        out.append((r[0], r[1], int(r[2])))
    return out


@pytest.fixture(scope="module")
def topics() -> list[tuple[str, str]]:
    header, rows = _tsv(DEMO / "topics.tsv")
    assert header == ["topic", "qid"]
    for r in rows:
        assert len(r) == 2, f"bad topics row {r!r}"
    return [(r[0], r[1]) for r in rows]


def test_files_exist():
    for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "topics.tsv", "README.md"):
        assert (DEMO / rel).is_file(), rel


def test_counts(corpus, queries, topics):
    assert len(corpus) >= MIN_DOCS
    assert len(queries) >= MIN_QUERIES
    assert len({t for t, _ in topics}) >= MIN_TOPICS
    assert len({q["topic"] for q in queries}) >= MIN_TOPICS


def test_corpus_records(corpus):
    ids = [d["_id"] for d in corpus]
    assert len(ids) == len(set(ids)), [i for i, c in Counter(ids).items() if c > 1]
    for d in corpus:
        assert set(d) >= {"_id", "title", "text"}, d.get("_id")
        assert isinstance(d["_id"], str) and d["_id"].strip()
        assert isinstance(d["title"], str) and d["title"].strip(), d["_id"]
        assert isinstance(d["text"], str) and d["text"].strip(), d["_id"]
        assert not d["text"].strip().lower().startswith(d["title"].strip().lower()), d["_id"]


def test_query_records(queries):
    ids = [q["_id"] for q in queries]
    assert len(ids) == len(set(ids)), [i for i, c in Counter(ids).items() if c > 1]
    for q in queries:
        assert set(q) >= {"_id", "text", "topic"}, q.get("_id")
        assert isinstance(q["text"], str) and q["text"].strip(), q["_id"]
        assert isinstance(q["topic"], str) and q["topic"].strip(), q["_id"]


def test_qrels_reference_known_ids(corpus, queries, qrels):
    doc_ids = {d["_id"] for d in corpus}
    query_ids = {q["_id"] for q in queries}
    for qid, did, _ in qrels:
        assert qid in query_ids, qid
        assert did in doc_ids, did


def test_qrels_labels_and_uniqueness(qrels):
    assert {s for _, _, s in qrels} <= {0, 1, 2}
    pairs = [(q, d) for q, d, _ in qrels]
    assert len(pairs) == len(set(pairs)), "duplicate (query, doc) judgement"


def test_every_query_has_enough_judgements(queries, qrels):
    per_query: dict[str, Counter] = defaultdict(Counter)
    for qid, _, s in qrels:
        per_query[qid][s] += 1
    for q in queries:
        counts = per_query[q["_id"]]
        for grade, minimum in MIN_PER_GRADE.items():
            assert counts[grade] >= minimum, (q["_id"], grade, dict(counts))


def test_topics_match_queries(queries, topics):
    qids = [qid for _, qid in topics]
    assert len(qids) == len(set(qids)), "query listed twice in topics.tsv"
    by_tsv = dict((qid, t) for t, qid in topics)
    by_jsonl = {q["_id"]: q["topic"] for q in queries}
    assert by_tsv == by_jsonl
