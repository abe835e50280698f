"""Data pipeline: readers, demo generator and the stages from raw click log to graph and PE."""
