"""HTTP load for `sessrec bench serve`, run as its own process (the server's CPU is not ours):
`concurrency` keep-alive connections each post one request after the other for `duration` seconds.

    python -m engine.bench.loadgen URL BODIES.json --concurrency 16 --duration 10 [--api-key K]
        [--path /feedback --ok 202]

Prints one JSON line: requests, errors (non-200 or broken connections), requests/s and latency
percentiles in ms. Plain asyncio streams speaking HTTP/1.1: a client library would spend more of
the two cores than the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import numpy as np


def _request(host: str, path: str, body: bytes, key: str | None) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + (f"X-API-Key: {key}\r\n" if key else "") + "\r\n")
    return head.encode() + body


async def _worker(url: str, bodies: list[bytes], deadline: float, key: str | None, lat: list, errors: list,
                  offset: int, path: str = "/recommend", ok: int = 200) -> None:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    reqs = [_request(u.netloc, path, b, key) for b in bodies]
    i = offset
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != ok:
                errors.append(status)
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        errors.append(repr(e))
    finally:
        writer.close()


async def _run(url: str, bodies: list[bytes], concurrency: int, duration: float, key: str | None,
               path: str = "/recommend", ok: int = 200) -> dict:
    lat: list[float] = []
    errors: list = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_worker(url, bodies, t0 + duration, key, lat, errors, w * 7919, path, ok)
                           for w in range(concurrency)))
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000 if lat else np.zeros(1)
    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors), "ok": len(lat) - sum(
                isinstance(e, int) for e in errors),
            "error_examples": [str(e) for e in errors[:3]], "seconds": round(wall, 2),
            "rps": round(len(lat) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="loadgen")
    p.add_argument("url")
    p.add_argument("bodies", help="JSON file: a list of request bodies (objects)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--path", default="/recommend", help="the endpoint to POST to")
    p.add_argument("--ok", type=int, default=200, help="the status of a success (202 for /feedback)")
    a = p.parse_args(argv)
    with open(a.bodies) as f:
        bodies = [json.dumps(b).encode() for b in json.load(f)]
    print(json.dumps(asyncio.run(_run(a.url, bodies, a.concurrency, a.duration, a.api_key, a.path, a.ok))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
