"""A bag-of-embeddings bi-encoder: the cheap, trainable surrogate family for imitation.

``score(q, d) = cos(sum_i P e(w_i), sum_j P e(v_j))`` over the words ``w_i`` of the query and
``v_j`` of the document (the first ``max_length`` words; letters only, lower-cased), with word
embeddings ``e`` (initialised from GloVe 6B 50d, then trained) and a linear projection ``P``
(50 -> ``dim``, initialised to the identity). Embedding norms act as learned term weights.

Why it exists: the only transformer checkpoint offline is the victim's own (all-MiniLM-L6-v2), and a
MiniLM cross-encoder fine-tuned on a few hundred pairs on a CPU barely moves from its fresh head.
This model has no weights in common with any victim, trains on tens of thousands of victim-ordered
pairs in a minute on a CPU, and is differentiable through the same white-box members as the
transformer rankers (``model``, a fast word-level ``tokenizer``, :meth:`input_embeddings`,
:meth:`score_embeds`, :meth:`encode`), so the word-substitution and trigger attacks use it
unchanged.

A model folder holds ``bow_config.json`` (``{"kind": "bag-of-embeddings", "in_dim", "dim",
"max_length", "vocab_size"}``), ``bow.safetensors`` and the tokenizer files; load it with
``load_ranker("bow:PATH")`` (or the path: the config file identifies it).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

from .encoders import BiEncoder

CONFIG = "bow_config.json"
WEIGHTS = "bow.safetensors"
SPECIALS = ("[PAD]", "[UNK]")
WORD = re.compile(r"[a-z]+")


class BagOfEmbeddings(torch.nn.Module):
    """``last_hidden_state = P e(ids)`` (no context, no position): the module a
    :class:`BagOfEmbeddingsEncoder` mean-pools. Accepts ``input_ids`` or ``inputs_embeds`` like a
    ``transformers`` encoder."""

    def __init__(self, vocab_size: int, in_dim: int = 50, dim: int = 128, max_length: int = 256):
        super().__init__()
        self.embeddings = torch.nn.Embedding(int(vocab_size), int(in_dim), padding_idx=0)
        self.proj = torch.nn.Linear(int(in_dim), int(dim), bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()
            n = min(int(in_dim), int(dim))
            self.proj.weight[:n, :n] = torch.eye(n)
        self.config = SimpleNamespace(max_position_embeddings=int(max_length),
                                      vocab_size=int(vocab_size), in_dim=int(in_dim), dim=int(dim))

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embeddings

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None,
                token_type_ids=None, **_):
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        return SimpleNamespace(last_hidden_state=self.proj(x))


def word_tokenizer(words: Sequence[str], max_length: int = 256):
    """A fast word-level tokenizer over ``words`` (lower-case letters only): text is
    lower-cased, every run of letters a-z is one token (``[UNK]`` when not in ``words``), every
    other character is dropped; no special tokens are added. Ids: ``[PAD]`` 0, ``[UNK]`` 1, then
    ``words`` in order."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in words:
        if not WORD.fullmatch(w):
            raise ValueError(f"vocabulary words must be lower-case letters a-z, got {w!r}")
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[^a-z]+"), behavior="removed")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   model_max_length=int(max_length))


def glove_vocabulary(texts: Sequence[str] = (), top: int = 30000) -> tuple[list[str], np.ndarray]:
    """``(words, vectors)`` for a bag-of-embeddings model: the ``top`` most frequent alphabetic
    GloVe 6B words plus every word of ``texts`` (e.g. the collection) that GloVe knows; then the
    words of ``texts`` it does not know, with zero vectors (trainable). Float32 ``(n, 50)``."""
    from .vectors import glove_vectors

    gw, gm = glove_vectors()
    wanted: dict[str, None] = {}
    for t in texts:
        for w in WORD.findall(str(t).lower()):
            wanted.setdefault(w, None)
    words, rows = [], []
    for i, w in enumerate(gw):
        if WORD.fullmatch(w or "") and (len(words) < top or w in wanted):
            words.append(w)
            rows.append(i)
    known = set(words)
    unknown = [w for w in wanted if w not in known]
    vecs = np.zeros((len(words) + len(unknown), gm.shape[1]), dtype=np.float32)
    vecs[: len(words)] = np.asarray(gm[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
    return words + unknown, vecs


class BagOfEmbeddingsEncoder(BiEncoder):
    """A :class:`~rankers.encoders.BiEncoder` over a :class:`BagOfEmbeddings` module (mean
    pooling, L2-normalised: scores are cosines in [-1, 1]). ``max_length`` counts words.

    Build one with :meth:`from_vectors`, train it with :func:`rankers.training.train_cross_encoder`
    (it has :meth:`forward_scores`), save it with :meth:`save`, load it with
    ``BagOfEmbeddingsEncoder(path)``.
    """

    kind = "bi-encoder"
    #: multiplies cosines in :meth:`forward_scores` (training): a RankNet margin of one unit is
    #: a cosine difference of 0.05
    train_scale = 20.0

    def _load_model(self, path):
        from safetensors.torch import load_file

        cfg = read_config(Path(path))
        model = BagOfEmbeddings(cfg["vocab_size"], cfg["in_dim"], cfg["dim"], cfg["max_length"])
        model.load_state_dict(load_file(str(Path(path) / WEIGHTS)))
        return model

    @classmethod
    def from_vectors(cls, words: Sequence[str], vectors: np.ndarray, dim: int = 128,
                     max_length: int = 256, name: str = "bow", **kw) -> "BagOfEmbeddingsEncoder":
        """A fresh model over ``words`` with input embeddings ``vectors`` (``(len(words), d)``)."""
        words = list(words)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(words):
            raise ValueError(f"vectors must be (len(words), d) = ({len(words)}, d), got "
                             f"{vectors.shape}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        tok = word_tokenizer(words, max_length)
        model = BagOfEmbeddings(len(SPECIALS) + len(words), vectors.shape[1], dim, max_length)
        with torch.no_grad():
            model.embeddings.weight.zero_()
            model.embeddings.weight[len(SPECIALS):] = torch.from_numpy(vectors)
        self = cls.__new__(cls)
        self._attach(tok, model, name=name, **kw)
        return self

    def _attach(self, tokenizer, model, *, name: str, batch_size: int = 256,
                device: str | None = None, doc_cache_size: int = 200_000):
        from .cache import LRU
        from .encoders import default_device

        self.path = ""
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.device = torch.device(device) if device else default_device()
        self.model.to(self.device)
        self.dtype = "fp32"
        self.batch_size = int(batch_size)
        self.max_length = int(model.config.max_position_embeddings)
        self.name = name
        self.pooling, self.normalize = "mean", True
        self._emb_cache = LRU(doc_cache_size)
        self.doc_cache_size = doc_cache_size

    def clear_cache(self) -> None:
        """Forget cached embeddings (after the weights change)."""
        from .cache import LRU

        self._emb_cache = LRU(self.doc_cache_size)

    def forward_scores(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """Scores with gradients (training): ``train_scale * cos`` per pair, shape ``(n,)``.
        Clears the embedding cache (the weights are about to change)."""
        self.clear_cache()
        return self.train_scale * self.pair_dots(queries, docs, self._embed)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        enc = self._to_device(enc)
        return self.pool(self.model(**enc).last_hidden_state, enc["attention_mask"])

    def save(self, out: str | Path, metadata: dict | None = None) -> Path:
        """Write the model folder (config, safetensors weights, tokenizer, ``metadata`` as
        ``ranklab_training.json``); returns its path."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        c = self.model.config
        (out / CONFIG).write_text(json.dumps(
            {"kind": "bag-of-embeddings", "vocab_size": c.vocab_size, "in_dim": c.in_dim,
             "dim": c.dim, "max_length": c.max_position_embeddings}, indent=1))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  str(out / WEIGHTS))
        self.tokenizer.save_pretrained(str(out))
        if metadata is not None:
            (out / "ranklab_training.json").write_text(json.dumps(metadata, indent=1, default=str))
        return out


def read_config(path: Path) -> dict:
    """The folder's ``bow_config.json``, checked (clear errors for a missing or foreign file)."""
    f = Path(path) / CONFIG
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG}; not a bag-of-embeddings model folder "
                                "(write one with BagOfEmbeddingsEncoder.save)")
    cfg = json.loads(f.read_text())
    if cfg.get("kind") != "bag-of-embeddings":
        raise ValueError(f"{f}: kind {cfg.get('kind')!r} is not 'bag-of-embeddings'")
    return cfg


def is_bow_dir(path) -> bool:
    return (Path(path) / CONFIG).is_file()
