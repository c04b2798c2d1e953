"""Attaching codebooks to a Hugging Face causal LM: the model (``model``), where each site is
(``sites``, ``families``, ``site_checks``), where the tokens of a pass sit (``token_positions``),
what to change (``interventions``, ``code_ref``) and what to read (``observation``); and loading
a saved codebook model with its tokenizer, checked, on a device (``loading``)."""
