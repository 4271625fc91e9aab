"""Defenses: randomized smoothing with certified top-K robustness (CertDR) and friends."""
from .certify import BOUNDS, MODES, Certificate, bernstein_eps, certify, checkpoints, hoeffding_eps
from .smoothing import SQUASHES, SmoothedRanker, SmoothingSets, noisy_copy, stable_hash

__all__ = ["SmoothedRanker", "SmoothingSets", "noisy_copy", "stable_hash", "SQUASHES", "Certificate",
           "certify", "hoeffding_eps", "bernstein_eps", "checkpoints", "MODES", "BOUNDS"]
