"""Searching a code store: pure functions from a store and a query to typed results."""

from codebook_features.search.baselines import BaselineRow, compare_baselines
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
    "CodeScore",
    "Example",
    "TopicCode",
    "compare_baselines",
    "regex_codes",
    "regex_token_rows",
    "score_codes",
    "token_codes",
    "token_rows",
    "topic_codes",
]
