"""Defenses: randomized smoothing with certified top-K robustness (CertDR), masking smoothing,
clustered smoothing sets and matched noisy training."""
from .certify import (BOUNDS, MODES, Certificate, bernstein_eps, certified_radius, certify,
                      checkpoints, hoeffding_eps, radius_curve)
from .clusters import ClusterStats, cluster_noise_transform, cluster_sets, radius_table
from .masking import MASK_MODES, MaskedSmoothedRanker, mask_noise_transform, mask_radius
from .noise import make_noise_transform, parse_noise_spec
from .smoothing import SQUASHES, SmoothedRanker, SmoothingSets, noisy_copy, stable_hash

__all__ = ["SmoothedRanker", "SmoothingSets", "noisy_copy", "stable_hash", "SQUASHES", "Certificate",
           "certify", "hoeffding_eps", "bernstein_eps", "checkpoints", "MODES", "BOUNDS",
           "certified_radius", "radius_curve", "MaskedSmoothedRanker", "mask_radius",
           "mask_noise_transform", "MASK_MODES", "cluster_sets", "cluster_noise_transform",
           "radius_table", "ClusterStats", "make_noise_transform", "parse_noise_spec"]
