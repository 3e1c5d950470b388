from .setup import load_config, setup
from .trainer import CadetTrainer

__all__ = ["CadetTrainer", "load_config", "setup"]
