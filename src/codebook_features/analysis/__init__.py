"""Finding what codes mean: record codes over tokens, score codes (and neurons) as
classifiers of token features."""

from codebook_features.analysis.features import CodeFeatureCounts, code_feature_counts
from codebook_features.analysis.neurons import best_neurons
from codebook_features.analysis.records import CodeRecord, record_codes

__all__ = [
    "CodeFeatureCounts",
    "CodeRecord",
    "best_neurons",
    "code_feature_counts",
    "record_codes",
]
