"""Searching codes: pure functions from a code store and a query to typed results, and the
in-memory view of codes per token (``records``) that scores codes and neurons as classifiers
of token features (``features``, ``neurons``)."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.search.baselines": ["BaselineRow", "compare_baselines"],
        "codebook_features.search.describe": [
            "CodeDescription",
            "describe_codes",
            "find_descriptions",
        ],
        "codebook_features.search.features": ["CodeFeatureCounts", "code_feature_counts"],
        "codebook_features.search.neurons": ["best_neurons"],
        "codebook_features.search.records": ["CodeRecord", "record_codes"],
        "codebook_features.search.regex": [
            "CodeScore",
            "Example",
            "regex_codes",
            "regex_token_rows",
            "score_codes",
        ],
        "codebook_features.search.tokens": ["token_codes", "token_rows"],
        "codebook_features.search.topics": ["TopicCode", "topic_codes"],
    },
)
