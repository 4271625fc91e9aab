"""Attacks on neural rankers and the threat model they share with certification.

Exports (loaded on first use, so ``import attacks`` imports neither torch nor TextAttack):

* :class:`WordSubstitutionAttack` (word substitution: exact lazy greedy, beam or the faithful
  PRADA loop behind ``search=``, :mod:`attacks.word_substitution`)
* :class:`AttackResult`, :func:`sample_targets`, :func:`new_rank`, :func:`results_frame`
  (:mod:`attacks.base`)
* :func:`summarize` (:mod:`attacks.metrics`)
* :class:`TextAttackWordSubstitution` (:mod:`attacks.textattack_backend`; imports TextAttack only
  when an attack runs)
* :class:`ThreatModel`, :class:`SynonymTable`, :func:`load_threat_model` (:mod:`attacks.threat`)
* :class:`TriggerAttack` (PAT-style imitation triggers, :mod:`attacks.imitation_trigger`)
* :class:`InsertionAttack` (query-plus, keyword stuffing, random-trigger; :mod:`attacks.insertion`)
* :class:`NGramLM`, :class:`CausalLM`, :func:`load_lm` (fluency models, :mod:`attacks.lm`)
"""
from __future__ import annotations

_EXPORTS = {
    "WordSubstitutionAttack": "word_substitution",
    "AttackResult": "base",
    "Attack": "base",
    "AttackError": "base",
    "TargetNotInList": "base",
    "EmptyDocument": "base",
    "NoSubstitutes": "base",
    "sample_targets": "base",
    "new_rank": "base",
    "results_frame": "base",
    "RESULT_COLUMNS": "base",
    "summarize": "metrics",
    "TextAttackWordSubstitution": "textattack_backend",
    "ThreatModel": "threat",
    "SynonymTable": "threat",
    "load_threat_model": "threat",
    "TriggerAttack": "imitation_trigger",
    "InsertionAttack": "insertion",
    "NGramLM": "lm",
    "CausalLM": "lm",
    "load_lm": "lm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'attacks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)
