"""Steering with codes: concepts (saved sets of codes), generation with them, and its evaluation."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.steering.actadd": [
            "AddActivation",
            "steering_vector",
            "steering_vectors",
        ],
        "codebook_features.steering.classifier": ["TopicClassifier"],
        "codebook_features.steering.concept": ["Concept", "load_concept", "save_concept"],
        "codebook_features.steering.eval_config": ["SteeringEvalConfig"],
        "codebook_features.steering.evaluation": ["evaluate_steering"],
        "codebook_features.steering.config": ["GenerationSettings", "SelectionRule"],
        "codebook_features.steering.generate": ["generate_texts", "steer"],
        "codebook_features.steering.metrics": ["Rate", "distinct_n", "perplexity", "regex_rate"],
        "codebook_features.steering.results": ["ConditionResult", "SteeringReport"],
        "codebook_features.steering.selection": [
            "concept_from_label",
            "concept_from_regex",
            "concept_from_texts",
            "split_documents",
        ],
    },
)
