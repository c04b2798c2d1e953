"""The code store: which codes fire on which tokens of a corpus, recorded as Parquet shards."""
