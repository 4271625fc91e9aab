"""Transformer rankers: bi-encoders and cross-encoders, both differentiable.

Any local folder or hub id that ``transformers`` can load works; loading never touches the
network unless the caller passes a hub id that is not cached (then ``transformers`` raises).

Batching rules (why this is fast on a CPU): inputs are sorted by length, padded per batch (never
to a fixed length), tokenized with one call per batch, scored under ``torch.inference_mode()``;
bi-encoders embed each unique query and document once per call and cache document embeddings
by text.

Truncation is explicit: texts longer than ``max_length`` word pieces are cut at the end. For a
cross-encoder only the document is cut (``truncation="only_second"``), the query is always kept
whole; a bi-encoder cuts each text on its own. ``max_length`` defaults to the model's own limit
(``sentence_bert_config.json``'s ``max_seq_length`` when present, else the tokenizer's
``model_max_length`` capped by the position embeddings).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import AttackEncoding, Ranker
from .cache import LRU, text_key


def _model_dir_max_length(path: str, tokenizer, config) -> int:
    cands = []
    st = Path(path) / "sentence_bert_config.json"
    if st.is_file():
        cands.append(int(json.loads(st.read_text()).get("max_seq_length", 10**9)))
    tml = getattr(tokenizer, "model_max_length", None)
    if tml and tml < 10**6:
        cands.append(int(tml))
    mpe = getattr(config, "max_position_embeddings", None)
    if mpe:
        cands.append(int(mpe))
    return min(cands) if cands else 512


def _pooling_mode(path: str) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers folder; default mean + normalize."""
    p = Path(path)
    pooling, normalize = "mean", True
    cfg = p / "1_Pooling" / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        if c.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif c.get("pooling_mode_max_tokens"):
            pooling = "max"
    mods = p / "modules.json"
    if mods.is_file():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(mods.read_text()))
    return pooling, normalize


def default_device() -> torch.device:
    return torch.device(os.environ.get("RANKLAB_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))


class TransformerRanker(Ranker):
    """Shared machinery of the encoder rankers; both implement
    :class:`rankers.base.DifferentiableRanker` with the same signatures.

    White-box members: ``model`` (torch module, eval mode), ``tokenizer`` (fast: character
    offsets), ``max_length`` (the truncation window), :meth:`input_embeddings`,
    :meth:`encode_for_attack`, :meth:`score_embeds` and :meth:`piece_ids`.
    """

    differentiable = True

    def __init__(self, path: str, *, batch_size: int = 64, max_length: int | None = None,
                 dtype: str = "fp32", device: str | None = None, name: str | None = None):
        self._init_from(path, None, batch_size=batch_size, max_length=max_length, dtype=dtype,
                        device=device, name=name)

    def _init_from(self, path, model=None, *, batch_size: int = 64, max_length: int | None = None,
                   dtype: str = "fp32", device: str | None = None, name: str | None = None):
        from transformers import AutoTokenizer

        self.path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = model if model is not None else self._load_model(self.path)
        self.model.eval()
        self.device = torch.device(device) if device else default_device()
        self.dtype = dtype
        if dtype == "bf16":
            self.model.to(torch.bfloat16)
        elif dtype != "fp32":
            raise ValueError("dtype must be 'fp32' or 'bf16'")
        self.model.to(self.device)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or _model_dir_max_length(self.path, self.tokenizer, self.model.config))
        base = name or f"{self.kind}:{Path(self.path).name}"
        self.name = base if dtype == "fp32" else f"{base}@{dtype}"

    kind = "transformer"

    def _load_model(self, path):  # pragma: no cover - abstract
        raise NotImplementedError

    def input_embeddings(self) -> torch.nn.Embedding:
        """The word-piece embedding module (shared with the model: never modify it)."""
        return self.model.get_input_embeddings()

    # -- DifferentiableRanker ------------------------------------------------------------------
    _doc_sequence = 0  # which sequence of the encoding holds the document

    def _attack_tokens(self, query: str, doc: str, **kw):  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_for_attack(self, query: str, doc: str) -> AttackEncoding:
        """The pair as the model reads it (see :class:`rankers.base.AttackEncoding`)."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(f"{self.name}: white-box attacks need a fast tokenizer (character "
                            "offsets map word pieces to words); install `tokenizers`")
        enc = self._attack_tokens(query, doc, return_offsets_mapping=True)
        seq = enc.sequence_ids(0)
        offsets = enc.pop("offset_mapping")[0].tolist()
        pieces = tuple((i, s, e) for i, ((s, e), sid) in enumerate(zip(offsets, seq))
                       if sid == self._doc_sequence and e > s)
        end = pieces[-1][2] if pieces else 0
        truncated = bool(doc[end:].strip())  # text left after the last piece read: cut
        doc_chars = end if truncated else len(doc)
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        return AttackEncoding(inputs=inputs, doc_pieces=pieces, doc_chars=int(doc_chars),
                              truncated=bool(truncated))

    def piece_ids(self, word: str) -> list[int]:
        """Word-piece ids of ``word`` (no special tokens)."""
        return list(self.tokenizer(word, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _batches(lengths: Sequence[int], batch_size: int):
        """Index batches of items sorted by length (longest first)."""
        order = np.argsort(-np.asarray(lengths), kind="stable")
        for i in range(0, len(order), batch_size):
            yield order[i: i + batch_size]

    def _to_device(self, enc):
        return {k: v.to(self.device) for k, v in enc.items()}


class BiEncoder(TransformerRanker):
    """Dual encoder: ``score(q, d) = <e(q), e(d)>`` with pooled (by default L2-normalised,
    i.e. cosine, range [-1, 1]) embeddings. Pooling follows the model folder's
    sentence-transformers config (mean pooling and normalisation when absent)."""

    kind = "bi-encoder"

    def __init__(self, path: str, *, doc_cache_size: int = 200_000, **kw):
        super().__init__(path, **kw)
        self.pooling, self.normalize = _pooling_mode(self.path)
        self._emb_cache = LRU(doc_cache_size)  # text key -> embedding (CPU)
        self.doc_cache_size = doc_cache_size

    def _load_model(self, path):
        from transformers import AutoModel

        return AutoModel.from_pretrained(path)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            out = hidden[:, 0]
        elif self.pooling == "max":
            out = hidden.masked_fill(m == 0, -1e4).max(1).values
        else:
            out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.float()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (float32, on CPU), shape ``(n, dim)``; cached by text."""
        texts = list(texts)
        keys = [text_key(t) for t in texts]
        found = {}
        for k in dict.fromkeys(keys):
            v = self._emb_cache.get(k)
            if v is not None:
                found[k] = v
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            by_key = {k: t for k, t in zip(keys, texts)}
            mtexts = [by_key[k] for k in missing]
            lengths = [len(t) for t in mtexts]
            with torch.inference_mode():
                for idx in self._batches(lengths, self.batch_size):
                    enc = self.tokenizer([mtexts[i] for i in idx], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")
                    enc = self._to_device(enc)
                    hidden = self.model(**enc).last_hidden_state
                    emb = self.pool(hidden, enc["attention_mask"]).cpu()
                    for j, i in enumerate(idx):
                        found[missing[i]] = emb[j]
                        self._emb_cache.put(missing[i], emb[j])
        return torch.stack([found[k] for k in keys])

    def _score_pairs(self, queries, docs):
        return self.pair_dots(queries, docs, self.encode).double().numpy()

    @staticmethod
    def pair_dots(queries, docs, embed) -> torch.Tensor:
        """``<embed(q), embed(d)>`` per pair, each unique text embedded once (``embed(texts) ->
        (n, dim)`` tensor: the cached :meth:`encode`, or a differentiable one in training)."""
        uq = list(dict.fromkeys(queries))
        ud = list(dict.fromkeys(docs))
        qe, de = embed(uq), embed(ud)
        qi = {q: i for i, q in enumerate(uq)}
        di = {d: i for i, d in enumerate(ud)}
        q_idx = torch.tensor([qi[q] for q in queries], device=qe.device)
        d_idx = torch.tensor([di[d] for d in docs], device=de.device)
        return (qe[q_idx] * de[d_idx]).sum(-1)

    # -- white-box (DifferentiableRanker) -------------------------------------------------------
    def _attack_tokens(self, query, doc, **kw):
        return self.tokenizer(doc, truncation=True, max_length=self.max_length,
                              return_tensors="pt", **kw)

    def score_embeds(self, query: str, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable scores ``(b,)`` of documents given as input embeddings ``(b, L, dim)``;
        the query embedding comes from :meth:`encode` (cached, no gradient)."""
        q = self.encode([query])[0].clone().to(self.device)  # clone: out of inference mode
        kw = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        d = self.pool(self.model(**kw).last_hidden_state, attention_mask)
        return (d * q).sum(-1)


class CrossEncoder(TransformerRanker):
    """Cross-encoder: ``score(q, d)`` = the raw logit of a sequence-classification head on the
    pair ``[CLS] q [SEP] d [SEP]`` (no sigmoid). With two labels the score is
    ``logit[1] - logit[0]`` (a log-odds of relevance)."""

    kind = "cross-encoder"

    def _load_model(self, path):
        """The checkpoint's sequence-classification model; refuses one whose ranking head would
        be newly initialised (random scores), e.g. a plain encoder folder."""
        from transformers import AutoModelForSequenceClassification

        from .loading import ModelLoadError

        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, output_loading_info=True)
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise ModelLoadError(
                f"{path} has no trained ranking head: {len(missing)} weight(s) would be "
                f"initialised at random ({', '.join(missing[:3])}), so its scores would be "
                "noise. Load a cross-encoder checkpoint (e.g. one written by `ranklab train`), "
                f"train one from this encoder (`ranklab train --base {path} ...`), or use it "
                f"as an embedding model: 'bi-encoder:{path}'")
        return model

    def _logits_to_score(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] == 1:
            return logits[:, 0]
        return logits[:, -1] - logits[:, 0]

    def tokenize_pairs(self, queries, docs):
        return self.tokenizer(list(queries), list(docs), padding=True, truncation="only_second",
                              max_length=self.max_length, return_tensors="pt")

    def forward_scores(self, queries, docs) -> torch.Tensor:
        """Scores with gradients (for training): one padded batch, model in its current mode."""
        enc = self._to_device(self.tokenize_pairs(queries, docs))
        return self._logits_to_score(self.model(**enc).logits.float())

    def _score_pairs(self, queries, docs):
        out = np.empty(len(queries))
        lengths = [len(q) + len(d) for q, d in zip(queries, docs)]
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for idx in self._batches(lengths, self.batch_size):
                enc = self._to_device(self.tokenize_pairs([queries[i] for i in idx], [docs[i] for i in idx]))
                out[idx] = self._logits_to_score(self.model(**enc).logits.float()).cpu().numpy()
        self.model.train(was_training)
        return out

    # -- white-box (DifferentiableRanker) -------------------------------------------------------
    _doc_sequence = 1

    def _attack_tokens(self, query, doc, **kw):
        return self.tokenizer(query, doc, truncation="only_second", max_length=self.max_length,
                              return_tensors="pt", **kw)

    def score_embeds(self, query: str, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable scores ``(b,)`` from input embeddings ``(b, L, dim)`` of whole encoded
        pairs (the query is inside the embeddings; ``query`` is accepted for the protocol)."""
        kw = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        return self._logits_to_score(self.model(**kw).logits.float())


def position_gradients(ranker, query: str, doc: str, loss_fn) -> tuple:
    """Gradient of ``loss_fn(score)`` w.r.t. the input embedding of every position of the encoded
    pair, for any :class:`~rankers.base.DifferentiableRanker`.

    Returns ``(encoding, embeds, grad)``: the :class:`~rankers.base.AttackEncoding`, the input
    embeddings ``(L, dim)`` and their gradient ``(L, dim)``; the document's positions are
    ``[p for p, _, _ in encoding.doc_pieces]``. The model's mode is left as it is (eval).
    """
    enc = ranker.encode_for_attack(query, doc)
    emb = ranker.input_embeddings()(enc.inputs["input_ids"]).detach().clone()
    emb.requires_grad_(True)
    with torch.enable_grad():
        score = ranker.score_embeds(query, emb, enc.inputs["attention_mask"],
                                    enc.inputs.get("token_type_ids"))
        (grad,) = torch.autograd.grad(loss_fn(score[0]), emb)
    return enc, emb.detach()[0], grad[0]
