"""Training codebook models: configuration, data, the loop, evaluation and checkpoints."""

from codebook_features.training.config import DataConfig, ModelConfig, RunConfig, TrainingConfig
from codebook_features.training.loop import TrainResult, train

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainResult", "TrainingConfig", "train"]
