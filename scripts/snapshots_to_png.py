#!/usr/bin/env python
"""Turn the app's SVG snapshots into PNG files for people to look at.

    python scripts/snapshots_to_png.py                      # tests/tui/__snapshots__ -> build/snapshots_png
    python scripts/snapshots_to_png.py a.svg b.svg -o out/  # given files
    python scripts/snapshots_to_png.py --scale 1.5

Needs cairosvg (`pip install cairosvg`, the `png` extra of the project).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT / "tests" / "tui" / "__snapshots__"
DEFAULT_OUT = ROOT / "build" / "snapshots_png"


def find_svgs(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(p.rglob("*.svg")))
        elif p.suffix == ".svg" and p.exists():
            out.append(p)
        else:
            print(f"skipped {p}: not an .svg file or folder", file=sys.stderr)
    return out


def convert(svgs: list[Path], out_dir: Path, scale: float = 1.0, base: Path | None = None) -> list[Path]:
    import cairosvg
    written = []
    for svg in svgs:
        rel = svg.relative_to(base) if base is not None and svg.is_relative_to(base) else Path(svg.name)
        png = (out_dir / rel).with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        cairosvg.svg2png(url=str(svg), write_to=str(png), scale=scale, background_color="black")
        written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, help=f"SVG files or folders (default {DEFAULT_SRC})")
    p.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args(argv)
    try:
        import cairosvg  # noqa: F401
    except ImportError:
        print("snapshots_to_png: cairosvg is not installed (pip install cairosvg)", file=sys.stderr)
        return 2
    sources = args.paths or [DEFAULT_SRC]
    svgs = find_svgs(sources)
    if not svgs:
        print(f"no SVG snapshots under {', '.join(map(str, sources))} "
              f"(run `pytest tests/tui --snapshot-update` first)", file=sys.stderr)
        return 1
    base = sources[0] if len(sources) == 1 and sources[0].is_dir() else None
    for png in convert(svgs, args.out, args.scale, base):
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
