"""Pipeline benchmark (same as `sessrec bench pipeline`): python bench/pipeline.py [--size full]"""

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))
