"""English stop words: function words that substitution attacks never replace nor propose.

Lower-case. The list holds pronouns, determiners, prepositions, conjunctions, auxiliary and modal
verbs, a few very common adverbs, and the fragments that contractions leave behind under the
lab's ``\\w+`` tokenization ("don't" -> "don", "t"; "we'll" -> "we", "ll").
"""
from __future__ import annotations

_WORDS = """
a about above after again against all am an and any are aren as at
be because been before being below between both but by
can cannot could couldn
d did didn do does doesn doing don down during
each either
few for from further
had hadn has hasn have haven having he her here hers herself him himself his how
i if in into is isn it its itself
just
ll
m me might mightn more most must mustn my myself
needn neither no nor not now
of off on once only or other our ours ourselves out over own
re
s same shall shan she should shouldn so some such
t than that the their theirs them themselves then there these they this those through
to too
under until up upon us
ve very
was wasn we were weren what when where which while who whom whose why will with won would
wouldn
you your yours yourself yourselves
also although among another anyone anything around could else ever every everyone
everything however indeed itself least less many may much nobody none nothing onto otherwise
rather since someone something still therefore thus toward towards unless via whatever whether
within without yet
"""

#: Lower-case English stop words (about 200).
STOPWORDS: frozenset[str] = frozenset(_WORDS.split())


def stopword_set(stopwords) -> frozenset[str]:
    """Resolve an attack's ``stopwords`` option: ``True`` -> :data:`STOPWORDS`, ``False``/``None``
    -> none, an iterable of words -> those words, lower-cased."""
    if stopwords is True:
        return STOPWORDS
    if stopwords is False or stopwords is None:
        return frozenset()
    return frozenset(w.lower() for w in stopwords)
