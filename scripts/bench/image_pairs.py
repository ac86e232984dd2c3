"""Writes the image pairs scripts/bench-image times: 24 pairs, 6 in each group of
side (512, 1024) and candidate format (PNG, JPEG q98). Each reference is a square window
of one of the shared photos resized with Pillow; its candidate is the same picture one
grey level brighter (a stand-in for GPU drift), saved as PNG or JPEG at quality 98.

    python image_pairs.py PHOTOS_DIR OUT_DIR
"""
import pathlib
import sys

from PIL import Image

photos = sorted(p for p in pathlib.Path(sys.argv[1]).iterdir()
                if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
out = pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
n = 0
for side in (512, 1024):
    for fmt in ("png", "jpg"):
        for i in range(6):
            photo = Image.open(photos[(n + i) % len(photos)]).convert("RGB")
            w, h = photo.size
            s = min(w, h)
            window = photo.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            ref = window.resize((side, side), Image.LANCZOS)
            cand = ref.point(lambda v: min(255, v + 1))
            name = f"{side}-{fmt}{i}"
            ref.save(out / f"{name}-reference.png")
            if fmt == "png":
                cand.save(out / f"{name}-candidate.png")
            else:
                cand.save(out / f"{name}-candidate.jpg", quality=98)
        n += 6
print(f"{n} pairs in {out}")
