"""Training: config, the three-phase step, the trainer, plots."""
from gca.train.config import RunConfig, load_config
from gca.train.trainer import Trainer

__all__ = ["RunConfig", "load_config", "Trainer"]
