"""Finding what codes mean: record codes over tokens, score codes (and neurons) as
classifiers of token features."""
