"""Models behind one interface: GNNs (gnn.py) and non-neural baselines (baselines.py)."""
