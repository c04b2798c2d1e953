"""Searching codes: pure functions from a code store and a query to typed results, and the
in-memory view of codes per token (``records``) that scores codes and neurons as classifiers
of token features (``features``, ``neurons``)."""

from codebook_features.search.baselines import BaselineRow, compare_baselines
from codebook_features.search.features import CodeFeatureCounts, code_feature_counts
from codebook_features.search.neurons import best_neurons
from codebook_features.search.records import CodeRecord, record_codes
from codebook_features.search.regex import (
    CodeScore,
    Example,
    regex_codes,
    regex_token_rows,
    score_codes,
)
from codebook_features.search.tokens import token_codes, token_rows
from codebook_features.search.topics import TopicCode, topic_codes

__all__ = [
    "BaselineRow",
    "CodeFeatureCounts",
    "CodeRecord",
    "CodeScore",
    "Example",
    "TopicCode",
    "best_neurons",
    "code_feature_counts",
    "compare_baselines",
    "record_codes",
    "regex_codes",
    "regex_token_rows",
    "score_codes",
    "token_codes",
    "token_rows",
    "topic_codes",
]
