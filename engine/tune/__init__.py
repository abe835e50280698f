"""Hyperparameter tuning (`sessrec tune`): search spaces per model (`spaces`), studies in the
workspace's SQLite database (`study`), and the trial objective, one training run per trial
(`objective`). Only `spaces` is light; the others import Optuna (and `objective` torch)."""
