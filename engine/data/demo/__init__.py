"""The embedded demo dataset: a seeded RetailRocket-format click log with planted structure.

    generator.py   the generative process (see its docstring), sizes, `generate_demo`
    truth.py       the planted parameters file (truth.npz) the generator writes and the oracle reads
    oracle.py      the exact next-item law of a generated log: `DemoOracle`, `oracle_recall`
"""

from engine.data.demo.generator import CSV_HEADER, DEMO_SIZES, DemoSize, generate_demo
from engine.data.demo.oracle import DemoOracle, oracle_recall
from engine.data.demo.truth import TRUTH_VERSION, DemoTruth

__all__ = ["CSV_HEADER", "DEMO_SIZES", "TRUTH_VERSION", "DemoOracle", "DemoSize", "DemoTruth",
           "generate_demo", "oracle_recall"]
