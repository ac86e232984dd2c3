"""Writes an audit folder of N jobs from fixtures/audit-demo for scripts/bench-audit: the
demo's records repeated, each copy with new job ids (`<id>.r<round>`), the same inputs,
outputs and miners, so every round is the demo mix again (an honest repeat of the same
input returning the same output passes the reuse check). Objects are shared; each
copy's reference folder is a symbolic link to the original's.

    python audit_folder.py DEMO_DIR OUT_DIR JOBS
"""
import json
import os
import pathlib
import sys

demo = pathlib.Path(sys.argv[1]).resolve()
out = pathlib.Path(sys.argv[2])
jobs = int(sys.argv[3])
def parsed(line):
    try:
        record = json.loads(line)
    except ValueError:
        return None  # the demo's deliberately malformed lines
    return record if isinstance(record, dict) and "job_id" in record else None


records = [r for r in map(parsed, (demo / "jobs.jsonl").read_text().splitlines()) if r]
out.mkdir(parents=True, exist_ok=True)
(out / "reference").mkdir(exist_ok=True)
for name in ("objects", "wallets.json"):
    link = out / name
    if not link.exists():
        link.symlink_to(demo / name)
refs = {p.name for p in (demo / "reference").iterdir()}
written = 0
with open(out / "jobs.jsonl", "w") as f:
    r = 0
    while written < jobs:
        for rec in records:
            if written == jobs:
                break
            orig = rec["job_id"]
            copy = dict(rec, job_id=f"{orig}.r{r}")
            f.write(json.dumps(copy, separators=(",", ":")) + "\n")
            if orig in refs:
                os.symlink(demo / "reference" / orig, out / "reference" / copy["job_id"])
            written += 1
        r += 1
print(f"{written} jobs in {out}")
