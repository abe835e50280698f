"""sessrec engine: readers, data pipeline, models, training, evaluation and recommendation.

This package never imports Textual: the terminal app (`tui/`) builds on it, not the other way round.
"""

__version__ = "0.1.0"
