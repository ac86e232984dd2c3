"""The baseline of scripts/bench-image: every pair decoded with Pillow and pHashed with
Python imagehash, in one process. Prints the best of ROUNDS rounds, in pairs/s.

    python pillow_imagehash.py PAIRS_DIR [ROUNDS]
"""
import pathlib
import sys
import time

import imagehash
from PIL import Image

pairs_dir = pathlib.Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
pairs = []
for cand in sorted(pairs_dir.glob("*-candidate.*")):
    name = cand.name.split("-candidate")[0]
    pairs.append((cand.read_bytes(), (pairs_dir / f"{name}-reference.png").read_bytes()))

import io

best = float("inf")
for _ in range(rounds):
    start = time.perf_counter()
    for a, b in pairs:
        ia, ib = Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))
        ia.load()
        ib.load()
        distance = imagehash.phash(ia) - imagehash.phash(ib)
    best = min(best, time.perf_counter() - start)
print(f"{len(pairs) / best:.2f}")
