"""Searching a code store: pure functions from a store and a query to typed results."""

from codebook_features.search.regex import CodeScore, Example, regex_codes, regex_token_rows

__all__ = ["CodeScore", "Example", "regex_codes", "regex_token_rows"]
