"""Training: stage 1 (GCA, graph-to-CLIP alignment) and stage 2 (joint fine-tuning).

cfg = load_config("train.toml", ["finetune.lr=1e-5", "resume=latest"])
pipeline_folder = train(cfg)
"""

from sg2image.training.config import ConfigError, TrainConfig, load_config, make_dataset
from sg2image.training.loop import train

__all__ = ["ConfigError", "TrainConfig", "load_config", "make_dataset", "train"]
