"""Test collections: documents, queries, qrels, topic groups and candidate runs.

Loaders
-------
``load_collection("demo")``           the built-in demo collection (``data/demo``)
``load_collection(PATH)``             a BEIR folder: ``corpus.jsonl``, ``queries.jsonl``,
                                      ``qrels/<split>.tsv``; optional ``runs/*.trec`` and
                                      ``topics.tsv``
``load_collection("irds:ID")``        an ``ir_datasets`` id (needs the package and its downloads)

Frames follow PyTerrier names: ``documents(docno, text)``, ``queries(qid, query)``,
``qrels(qid, docno, label)``; runs ``qid, query, docno, text, score, rank`` (1-based ranks).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rankers.base import add_ranks

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
BUILTIN = {"demo": DATA_DIR / "demo"}


_HAS_WORD = re.compile(r"\w", re.UNICODE)


class CollectionError(ValueError):
    """A collection could not be loaded or is inconsistent; the message says how to fix it."""


@dataclass
class Collection:
    name: str
    documents: pd.DataFrame  # docno, text
    queries: pd.DataFrame  # qid, query
    qrels: pd.DataFrame  # qid, docno, label
    runs: dict = field(default_factory=dict)  # name -> run frame (from files)
    topics: pd.DataFrame | None = None  # topic, qid
    path: str | None = None
    _cand_cache: dict = field(default_factory=dict, repr=False)
    _bm25: object = field(default=None, repr=False)

    def __post_init__(self):
        self.documents = self.documents.astype({"docno": str})
        self.queries = self.queries.astype({"qid": str})
        self.qrels = self.qrels.astype({"qid": str, "docno": str})
        self.qrels["label"] = self.qrels["label"].astype(int)
        self._text = dict(zip(self.documents["docno"], self.documents["text"]))
        self._query = dict(zip(self.queries["qid"], self.queries["query"]))

    # -- lookups ---------------------------------------------------------------------------
    def text(self, docno: str) -> str:
        try:
            return self._text[str(docno)]
        except KeyError:
            raise CollectionError(f"{self.name}: no document with docno {docno!r}") from None

    def query_text(self, qid: str) -> str:
        try:
            return self._query[str(qid)]
        except KeyError:
            raise CollectionError(f"{self.name}: no query with qid {qid!r}") from None

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for col in (self.documents["docno"], self.documents["text"], self.queries["qid"], self.queries["query"]):
            h.update("\x1f".join(col.tolist()).encode())
        return h.hexdigest()[:12]

    def topic_groups(self) -> dict[str, list[str]]:
        """topic -> qids (from ``topics.tsv``); empty when the collection has none."""
        if self.topics is None:
            return {}
        return {t: g["qid"].astype(str).tolist() for t, g in self.topics.groupby("topic", sort=True)}

    def subset(self, qids) -> "Collection":
        """The same collection restricted to some queries (documents unchanged)."""
        qids = [str(q) for q in qids]
        unknown = sorted(set(qids) - set(self.queries["qid"]))
        if unknown:
            raise CollectionError(f"{self.name}: unknown qids {unknown[:5]}")
        keep = self.queries["qid"].isin(qids)
        return Collection(self.name, self.documents, self.queries[keep].reset_index(drop=True),
                          self.qrels[self.qrels["qid"].isin(qids)].reset_index(drop=True),
                          {k: v[v["qid"].isin(qids)] for k, v in self.runs.items()},
                          None if self.topics is None else self.topics[self.topics["qid"].isin(qids)],
                          self.path, {}, self._bm25)

    def sample_queries(self, n: int | None, seed: int = 0) -> "Collection":
        """A seeded sample of ``n`` queries (sorted by position; all when ``n`` is None or >= the
        number of queries). The same ``(n, seed)`` always picks the same queries."""
        if n is None or n >= len(self.queries):
            return self
        if int(n) != n or n < 1:
            raise CollectionError(f"the number of queries must be a positive integer, got {n!r}")
        import numpy as np

        qids = self.queries["qid"].tolist()
        pick = sorted(np.random.default_rng(seed).choice(len(qids), size=int(n), replace=False))
        return self.subset([qids[i] for i in pick])

    def split_queries(self, candidates: pd.DataFrame, n: int, seed: int = 0,
                      min_candidates: int = 2) -> tuple[list[str], list[str]]:
        """A seeded, disjoint split of the queries with at least ``min_candidates`` rows in
        ``candidates`` (a first-stage frame with ``qid``): ``(attacked, rest)``, the first ``n``
        of a seeded permutation (sorted) and the others in permutation order (take the first
        few for an attacker's imitation queries). Raises :class:`CollectionError` when no query
        qualifies; fewer than ``n`` qualifying queries are all attacked."""
        import numpy as np

        sizes = candidates.groupby("qid").size()
        eligible = sorted(sizes[sizes >= int(min_candidates)].index.astype(str))
        if not eligible:
            raise CollectionError(f"{self.name}: no query has >= {min_candidates} first-stage "
                                  "candidates (a larger k, or another first stage)")
        perm = [eligible[i] for i in np.random.default_rng(seed).permutation(len(eligible))]
        return sorted(perm[: int(n)]), perm[int(n):]

    def ranker(self, spec, **kwargs):
        """:func:`rankers.load_ranker` of ``spec``, except that ``"bm25"`` is this collection's
        fitted BM25 (scores with the index's statistics, so attacked copies stay comparable)."""
        from rankers import load_ranker

        if spec == "bm25":
            return self.bm25()
        return load_ranker(spec, **kwargs)

    # -- PyTerrier dataset API -----------------------------------------------------------------
    def get_topics(self, variant=None) -> pd.DataFrame:
        """Queries as PyTerrier topics (``qid, query``)."""
        return self.queries[["qid", "query"]].copy()

    def get_qrels(self, variant=None) -> pd.DataFrame:
        """Qrels as PyTerrier expects them (``qid, docno, label``)."""
        return self.qrels[["qid", "docno", "label"]].copy()

    def get_corpus_iter(self, verbose: bool = False):
        """Documents as dicts ``{"docno", "text"}`` (PyTerrier's corpus iterator)."""
        for docno, text in zip(self.documents["docno"], self.documents["text"]):
            yield {"docno": docno, "text": text}

    def wordless_queries(self) -> list[str]:
        """qids of queries without a single ``\\w`` character (empty or punctuation only): no
        ranker can rank for them, so candidate generation leaves them out (with a warning)."""
        return [q for q, t in zip(self.queries["qid"], self.queries["query"])
                if not _HAS_WORD.search(str(t))]

    # -- first stage -------------------------------------------------------------------------
    def bm25(self):
        """A BM25 ranker fitted on this collection's documents (built once)."""
        if self._bm25 is None:
            from rankers.bm25 import BM25Ranker

            self._bm25 = BM25Ranker(self.documents["text"].tolist(), self.documents["docno"].tolist())
        return self._bm25

    def candidates(self, first_stage: str = "bm25", k: int = 100, qids=None) -> pd.DataFrame:
        """Candidate run frame: top-``k`` per query (``qid, query, docno, text, score, rank``).

        ``first_stage``: ``"bm25"`` (the lab's BM25 on this collection; computed once per k and
        cached) or the name of a run shipped with the collection (``runs/NAME.trec``; see
        :attr:`runs`).
        """
        if k < 1:
            raise CollectionError("k must be >= 1")
        key = (first_stage, k)
        if key not in self._cand_cache:
            blank = self.wordless_queries()
            if blank:
                warnings.warn(
                    f"{self.name}: {len(blank)} of {len(self.queries)} queries have no word "
                    f"(empty or punctuation only, e.g. qid {blank[0]!r}); they get no candidates "
                    "and are left out of rankings and evaluation", UserWarning, stacklevel=2)
            if first_stage == "bm25":
                keep = ~self.queries["qid"].isin(blank)
                qids_all = self.queries["qid"][keep].tolist()
                hits = self.bm25().retrieve(self.queries["query"][keep].tolist(), k=k)
                nomatch = [q for q, h in zip(qids_all, hits) if not any(s > 0 for _, s in h)]
                if nomatch:  # all-zero scores would be a list in file order
                    warnings.warn(
                        f"{self.name}: {len(nomatch)} queries match no document for BM25 (stop "
                        f"words or unknown words only, e.g. qid {nomatch[0]!r}); they get no "
                        "candidates and are left out of rankings and evaluation", UserWarning,
                        stacklevel=2)
                skip = set(nomatch)
                rows = [(q, d, s) for q, h in zip(qids_all, hits) if q not in skip for d, s in h]
                run = pd.DataFrame(rows, columns=["qid", "docno", "score"])
            elif first_stage in self.runs:
                run = self.runs[first_stage][["qid", "docno", "score"]].copy()
                run = run[~run["qid"].astype(str).isin(blank)]
                run = add_ranks(run)
                run = run[run["rank"] <= k].drop(columns="rank")
            else:
                raise CollectionError(
                    f"unknown first stage {first_stage!r} for {self.name}; use 'bm25' or one of "
                    f"the collection's runs: {sorted(self.runs) or 'none'}")
            run["query"] = run["qid"].map(self._query)
            run["text"] = run["docno"].map(self._text)
            missing = run["text"].isna().sum() + run["query"].isna().sum()
            if missing:
                raise CollectionError(f"{self.name}: run {first_stage!r} names {missing} unknown qids/docnos")
            self._cand_cache[key] = add_ranks(run[["qid", "query", "docno", "text", "score"]])
        run = self._cand_cache[key]
        if qids is not None:
            run = run[run["qid"].isin([str(q) for q in qids])].reset_index(drop=True)
        return run.copy()

    def __repr__(self) -> str:
        return (f"Collection({self.name!r}: {len(self.documents)} documents, {len(self.queries)} "
                f"queries, {len(self.qrels)} qrels, runs={sorted(self.runs)})")


# -- file readers ------------------------------------------------------------------------------
def _lines(path: Path):
    """``(line number, text)`` of each non-blank line, UTF-8 decoded; a bad byte names its line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CollectionError(
                    f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
            if line.strip():
                yield n, line


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line of a JSON-lines file."""
    rows = []
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CollectionError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise CollectionError(f"{path}:{n}: expected a JSON object per line, got "
                                  f"{type(obj).__name__}")
        rows.append((n, obj))
    return rows


def _field(path: Path, n: int, obj: dict, key: str, what: str) -> str:
    v = obj.get(key)
    if v is None or isinstance(v, (dict, list, bool)):
        raise CollectionError(f"{path}:{n}: {what} has no {key!r} field" if v is None else
                              f"{path}:{n}: {key!r} must be a string, got {type(v).__name__}")
    return str(v)


#: Column names a qrels header line may use (case-insensitive).
QRELS_HEADER_NAMES = {"query-id", "query_id", "qid", "queryid", "corpus-id", "corpus_id",
                      "doc-id", "doc_id", "docid", "docno", "score", "label", "relevance",
                      "rel", "grade", "iter", "iteration", "q0"}


def _int_label(path: Path, n: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        x = float(text)
    except ValueError:
        x = None
    if x is not None and x == x and x not in (float("inf"), float("-inf")) and x == int(x):
        return int(x)
    raise CollectionError(f"{path}:{n}: relevance label {text!r} is not an integer; qrels labels "
                          "are integer grades (0, 1, 2, ...): round them in the file first")


def read_qrels(path: str | Path) -> pd.DataFrame:
    """Qrels from a BEIR tsv (``query-id corpus-id score``, tab-separated, header optional) or a
    TREC file (``qid iter docno label``). Returns ``qid, docno, label`` (integers).

    A first line is a header only when it names columns (:data:`QRELS_HEADER_NAMES`), so a
    headerless file keeps its first judgment. Labels must be integers (``2`` or ``2.0``; ``1.5``
    is an error). A (qid, docno) judged twice with different labels is an error naming both
    lines; an exact repeat is dropped with a warning. Errors name the file and line.
    """
    path = Path(path)
    rows, seen, dups = [], {}, 0
    first = True
    for n, line in _lines(path):
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        fields = [x.strip() for x in fields]
        if first:
            first = False
            if any(x.lower() in QRELS_HEADER_NAMES for x in fields):
                continue
        if len(fields) == 3:
            qid, docno, label = fields
        elif len(fields) == 4:
            qid, _, docno, label = fields
        else:
            raise CollectionError(
                f"{path}:{n}: expected 3 tab-separated fields (query-id, corpus-id, score) or 4 "
                f"TREC fields (qid iter docno label), got {len(fields)}: {line.strip()[:80]!r}")
        lab = _int_label(path, n, label)
        prev = seen.get((qid, docno))
        if prev is not None:
            if prev[0] != lab:
                raise CollectionError(
                    f"{path}:{n}: query {qid!r}, document {docno!r} is judged {lab} here and "
                    f"{prev[0]} at line {prev[1]}; keep one judgment per pair")
            dups += 1
            continue
        seen[(qid, docno)] = (lab, n)
        rows.append((qid, docno, lab))
    if dups:
        warnings.warn(f"{path}: dropped {dups} repeated judgment(s) (same query, document and "
                      "label)", stacklevel=2)
    df = pd.DataFrame(rows, columns=["qid", "docno", "label"])
    return df.astype({"qid": str, "docno": str, "label": int})


def read_trec_run(path: str | Path) -> pd.DataFrame:
    """A TREC run file (``qid Q0 docno rank score tag``) as ``qid, docno, score, rank``.

    Every line needs 6 whitespace-separated fields, an integer rank and a finite score; errors
    name the file and line.
    """
    path = Path(path)
    rows = []
    for n, line in _lines(path):
        f = line.split()
        if len(f) != 6:
            raise CollectionError(f"{path}:{n}: a TREC run line has 6 fields (qid Q0 docno rank "
                                  f"score tag), got {len(f)}: {line.strip()[:80]!r}")
        try:
            rank = int(f[3])
        except ValueError:
            raise CollectionError(f"{path}:{n}: rank {f[3]!r} is not an integer") from None
        try:
            score = float(f[4])
        except ValueError:
            score = float("nan")
        if not math.isfinite(score):
            raise CollectionError(f"{path}:{n}: score {f[4]!r} is not a finite number")
        rows.append((f[0], f[2], score, rank))
    return pd.DataFrame(rows, columns=["qid", "docno", "score", "rank"]).astype(
        {"qid": str, "docno": str, "score": float, "rank": int})


def write_trec_run(run: pd.DataFrame, path: str | Path, tag: str = "ranklab") -> None:
    """Write a run frame in TREC format (ranks written 1-based)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in run.sort_values(["qid", "rank"]).itertuples():
            f.write(f"{r.qid} Q0 {r.docno} {int(r.rank)} {float(r.score):.6f} {tag}\n")


def load_beir(path: str | Path, split: str = "test", name: str | None = None) -> Collection:
    path = Path(path).expanduser()
    corpus, queries = path / "corpus.jsonl", path / "queries.jsonl"
    for p in (corpus, queries):
        if not p.is_file():
            raise CollectionError(
                f"{path} is not a BEIR folder: {p.name} is missing (expected corpus.jsonl, "
                "queries.jsonl and qrels/<split>.tsv)")
    docs = _read_jsonl(corpus)
    if not docs:
        raise CollectionError(f"{corpus} holds no documents: a BEIR corpus has one JSON object "
                              'per line, e.g. {"_id": "d1", "title": "", "text": "..."}')
    documents = pd.DataFrame({
        "docno": [_field(corpus, n, d, "_id", "the document") for n, d in docs],
        "text": [_doc_text(corpus, n, d) for n, d in docs],
    })
    qs = _read_jsonl(queries)
    if not qs:
        raise CollectionError(f"{queries} holds no queries: one JSON object per line, e.g. "
                              '{"_id": "q1", "text": "..."}')
    qframe = pd.DataFrame({"qid": [_field(queries, n, q, "_id", "the query") for n, q in qs],
                           "query": [_field(queries, n, q, "text", "the query") for n, q in qs]})
    qs = [q for _, q in qs]
    qrels_path = path / "qrels" / f"{split}.tsv"
    if qrels_path.is_file():
        qrels = read_qrels(qrels_path)
    else:
        qrels = pd.DataFrame({"qid": pd.Series(dtype=str), "docno": pd.Series(dtype=str),
                              "label": pd.Series(dtype=int)})
    empty = documents["text"].str.strip().eq("")
    if empty.all():
        raise CollectionError(f"{corpus}: every document is empty (no title or text)")
    if empty.any():
        warnings.warn(f"{path.name}: dropped {int(empty.sum())} empty documents "
                      f"(e.g. docno {documents['docno'][empty].iloc[0]!r})", stacklevel=2)
        documents = documents[~empty].reset_index(drop=True)
    runs = {p.name[: -len(".trec")]: read_trec_run(p) for p in sorted((path / "runs").glob("*.trec"))}
    topics = None
    if (path / "topics.tsv").is_file():
        topics = pd.read_csv(path / "topics.tsv", sep="\t", dtype=str)
    elif qs and "topic" in qs[0]:
        topics = pd.DataFrame({"topic": [q.get("topic") for q in qs], "qid": qframe["qid"]})
    col = Collection(name or path.name, documents, qframe, qrels, runs, topics, str(path))
    _validate(col)
    return col


def _doc_text(path: Path, n: int, d: dict) -> str:
    for key in ("title", "text"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise CollectionError(f"{path}:{n}: {key!r} must be a string, got "
                                  f"{type(d[key]).__name__}")
    title, text = (d.get("title") or "").strip(), (d.get("text") or "").strip()
    if title and not text.lower().startswith(title.lower()):
        return f"{title}. {text}" if text else title
    return text


def _validate(col: Collection) -> None:
    if col.documents["docno"].duplicated().any():
        dup = col.documents["docno"][col.documents["docno"].duplicated()].iloc[0]
        raise CollectionError(f"{col.name}: duplicate docno {dup!r}")
    if col.queries["qid"].duplicated().any():
        raise CollectionError(f"{col.name}: duplicate qids in queries")
    known_q, known_d = set(col.queries["qid"]), set(col.documents["docno"])
    for what, ids, known in (("qids", col.qrels["qid"], known_q), ("docnos", col.qrels["docno"], known_d)):
        ids = set(ids)
        bad = sorted(ids - known)
        if not bad:
            continue
        if len(bad) > len(ids) / 2:
            raise CollectionError(
                f"{col.name}: qrels name {len(bad)} of {len(ids)} {what} that are not in the "
                f"collection (e.g. {bad[:3]}); are the qrels from another collection?")
        warnings.warn(f"{col.name}: qrels name {len(bad)} {what} missing from the collection "
                      f"(e.g. {bad[:3]}; empty documents are dropped at load); they are kept in "
                      "the qrels and count as unretrieved", stacklevel=3)


def load_irds(dataset_id: str) -> Collection:
    """An ``ir_datasets`` collection. Needs the package and network access (or its cache)."""
    try:
        import ir_datasets
    except ImportError:
        raise CollectionError(
            f"'irds:{dataset_id}' needs the ir_datasets package (`pip install ir_datasets`) and its "
            "downloads. Offline, convert the collection to a BEIR folder (corpus.jsonl, "
            "queries.jsonl, qrels/test.tsv) and pass that folder instead.") from None
    try:
        ds = ir_datasets.load(dataset_id)
        documents = pd.DataFrame([(d.doc_id, getattr(d, "text", "")) for d in ds.docs_iter()],
                                 columns=["docno", "text"])
        queries = pd.DataFrame([(q.query_id, q.text) for q in ds.queries_iter()], columns=["qid", "query"])
        qrels = pd.DataFrame([(q.query_id, q.doc_id, q.relevance) for q in ds.qrels_iter()],
                             columns=["qid", "docno", "label"])
    except Exception as e:  # network errors, missing files
        raise CollectionError(
            f"could not load ir_datasets id {dataset_id!r} ({type(e).__name__}: {e}). Offline, "
            "use a local BEIR folder instead (corpus.jsonl, queries.jsonl, qrels/test.tsv).") from e
    return Collection(dataset_id, documents, queries, qrels)


_FP_CACHE: dict[tuple, str] = {}


def data_fingerprint(spec: str | os.PathLike) -> str:
    """A 16-hex digest of the bytes of a collection's files, for job ids and caches.

    For ``"demo"`` or a BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, every file under
    ``qrels/``, ``topics.tsv`` and ``runs/*.trec`` (relative name, size and content of each), so
    editing any judgment changes it. Memoised per process by (path, size, mtime). ``irds:`` ids
    have no local files: ``"irds:<id>"`` is returned as is. An unknown spec gives ``""`` (loading
    it fails with its own error).
    """
    s = str(spec)
    if s.startswith("irds:"):
        return s
    path = BUILTIN.get(s) or Path(s).expanduser()
    if not path.is_dir():
        return ""
    files = [path / "corpus.jsonl", path / "queries.jsonl", path / "topics.tsv"]
    files += sorted(p for p in (path / "qrels").rglob("*") if p.is_file())
    files += sorted((path / "runs").glob("*.trec"))
    files = [f for f in files if f.is_file()]
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    got = _FP_CACHE.get(stats)
    if got is None:
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(path).as_posix()}\0{f.stat().st_size}\0".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        got = _FP_CACHE[stats] = h.hexdigest()[:16]
    return got


def load_collection(spec: str | os.PathLike, split: str = "test") -> Collection:
    """A collection from ``"demo"``, a BEIR folder path, or ``"irds:<id>"``."""
    if isinstance(spec, Collection):
        return spec
    s = str(spec)
    if s in BUILTIN:
        if not BUILTIN[s].is_dir():
            raise CollectionError(f"the built-in collection {s!r} is missing from {BUILTIN[s]}; "
                                  "is this a complete checkout?")
        return load_beir(BUILTIN[s], split=split, name=s)
    if s.startswith("irds:"):
        return load_irds(s[5:])
    p = Path(s).expanduser()
    if p.is_dir():
        return load_beir(p, split=split)
    raise CollectionError(
        f"unknown dataset {s!r}: use 'demo', the path of a BEIR folder (corpus.jsonl, "
        "queries.jsonl, qrels/test.tsv), or 'irds:<ir_datasets id>'" +
        (" (that path does not exist)" if ("/" in s or s.startswith(".")) else ""))
