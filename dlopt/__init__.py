"""dlopt: config-driven deep-learning experiments on Hydra and Lightning."""

__version__ = "0.1.0"
