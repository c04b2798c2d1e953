"""Training codebook models: configuration, data, the loop, evaluation and checkpoints."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.training.config": [
            "DataConfig",
            "ModelConfig",
            "RunConfig",
            "TrainingConfig",
        ],
        "codebook_features.training.loop": ["TrainResult", "train"],
    },
)
