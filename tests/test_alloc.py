"""engine.core.alloc: training keeps freed memory for reuse; an evaluation pass hands it back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")

SCRIPT = textwrap.dedent("""
    import json, torch
    from engine.core.alloc import reuse_freed_memory, returning_freed_memory
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    out = {"applied": reuse_freed_memory()}
    base = rss_mb()
    x = torch.ones(300 << 18)          # 300 MB: under the raised threshold, so it comes from the heap
    del x
    out["kept"] = rss_mb() - base      # freed, but kept for the next step
    with returning_freed_memory():
        out["at_enter"] = rss_mb() - base
        y = torch.ones(300 << 18)      # 300 MB: over the pass's threshold, so it is mapped ...
        del y
        out["in_pass"] = rss_mb() - base   # ... and unmapped on free
    z = torch.ones(300 << 18)          # after the pass: the heap again
    del z
    out["after"] = rss_mb() - base
    print(json.dumps(out))
""")


def test_a_pass_hands_back_what_training_keeps():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    if not got["applied"]:
        pytest.skip("not glibc")
    assert got["kept"] > 250                      # training mode: the freed 300 MB stays in the process
    assert got["at_enter"] < 50 and got["in_pass"] < 50
    assert got["after"] > 250                     # training's reuse is back after the pass
