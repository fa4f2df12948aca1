"""Hyperparameter search on Optuna: the search space, the study, the sweeper and the trials' pruning."""
