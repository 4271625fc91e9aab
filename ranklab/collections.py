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
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rankers.base import add_ranks

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
BUILTIN = {"demo": DATA_DIR / "demo"}


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
            if first_stage == "bm25":
                qids_all = self.queries["qid"].tolist()
                hits = self.bm25().retrieve(self.queries["query"].tolist(), k=k)
                rows = [(q, d, s) for q, h in zip(qids_all, hits) for d, s in h]
                run = pd.DataFrame(rows, columns=["qid", "docno", "score"])
            elif first_stage in self.runs:
                run = self.runs[first_stage][["qid", "docno", "score"]].copy()
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
def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CollectionError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def read_qrels(path: str | Path) -> pd.DataFrame:
    """Qrels from a BEIR tsv (header ``query-id corpus-id score``) or a TREC file
    (``qid iter docno label``). Returns ``qid, docno, label``."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    if first.lower().startswith("query-id") or "\t" in first and len(first.split("\t")) == 3:
        df = pd.read_csv(path, sep="\t", dtype=str)
        df.columns = ["qid", "docno", "label"][: len(df.columns)]
    else:
        df = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, names=["qid", "iter", "docno", "label"])
        df = df.drop(columns="iter")
    df["label"] = pd.to_numeric(df["label"], errors="raise").astype(int)
    return df[["qid", "docno", "label"]]


def read_trec_run(path: str | Path) -> pd.DataFrame:
    """A TREC run file (``qid Q0 docno rank score tag``) as ``qid, docno, score, rank``."""
    df = pd.read_csv(path, sep=r"\s+", header=None, dtype=str,
                     names=["qid", "q0", "docno", "rank", "score", "tag"])
    df["score"] = df["score"].astype(float)
    df["rank"] = df["rank"].astype(int)
    return df[["qid", "docno", "score", "rank"]]


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
    documents = pd.DataFrame({
        "docno": [str(d["_id"]) for d in docs],
        "text": [_doc_text(d) for d in docs],
    })
    qs = _read_jsonl(queries)
    qframe = pd.DataFrame({"qid": [str(q["_id"]) for q in qs], "query": [q["text"] for q in qs]})
    qrels_path = path / "qrels" / f"{split}.tsv"
    if qrels_path.is_file():
        qrels = read_qrels(qrels_path)
    else:
        qrels = pd.DataFrame({"qid": pd.Series(dtype=str), "docno": pd.Series(dtype=str),
                              "label": pd.Series(dtype=int)})
    empty = documents["text"].str.strip().eq("")
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


def _doc_text(d: dict) -> str:
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
