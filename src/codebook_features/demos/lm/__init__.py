"""The offline language demo: its corpus (fetched from package registries), tokenizer, runs."""
