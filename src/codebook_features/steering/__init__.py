"""Steering with codes: concepts (saved sets of codes), generation with them, and its evaluation."""

from codebook_features.steering.actadd import AddActivation, steering_vector
from codebook_features.steering.classifier import TopicClassifier
from codebook_features.steering.concept import Concept, load_concept, save_concept
from codebook_features.steering.evaluation import SteeringEvalConfig, evaluate_steering
from codebook_features.steering.generate import GenerationSettings, generate_texts, steer
from codebook_features.steering.metrics import Rate, distinct_n, perplexity, regex_rate
from codebook_features.steering.results import ConditionResult, SteeringReport
from codebook_features.steering.selection import (
    SelectionRule,
    concept_from_label,
    concept_from_regex,
    concept_from_texts,
    split_documents,
)

__all__ = [
    "AddActivation",
    "Concept",
    "ConditionResult",
    "GenerationSettings",
    "Rate",
    "SelectionRule",
    "SteeringEvalConfig",
    "SteeringReport",
    "TopicClassifier",
    "concept_from_label",
    "concept_from_regex",
    "concept_from_texts",
    "distinct_n",
    "evaluate_steering",
    "generate_texts",
    "load_concept",
    "perplexity",
    "regex_rate",
    "save_concept",
    "split_documents",
    "steer",
    "steering_vector",
]
