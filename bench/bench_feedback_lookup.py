"""/feedback's lookup of its rows' predictions in the one-machine request log: a scan for the ids
(``RequestLog.lookup``) against the baseline of reading every record into a data frame (what it did
before), on one log of ``--mb`` megabytes across its rotations, in the same run.

    python bench/bench_feedback_lookup.py --mb 48 --ids 1000

The last line is JSON: both times, their ratio and whether both found the same records; the exit
status says whether they did and the scan is at least ``--min-ratio`` times faster.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from monitoring.request_log import LOOKUP_COLUMNS, RequestLog


def _record(i: int) -> dict:
    """A served request as the service logs it: ids, score, version and a drift profile."""
    return {"ts": float(i), "model": "popularity-binary", "version": "3", "score": 0.5, "label": 1,
            "prediction_id": f"{i:032x}", "post_id": f"post-{i}", "profile_rate": 1.0,
            **{f"feature_{k}": 0.1 * k for k in range(20)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=48.0)
    parser.add_argument("--ids", type=int, default=1000, help="prediction ids and post ids looked up (half each)")
    parser.add_argument("--min-ratio", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        log = RequestLog(Path(folder), 10 * 1024 * 1024, 5)
        n = 0
        while sum(f.stat().st_size for f in Path(folder).glob("requests.jsonl*")) < args.mb * 1e6:
            log.append([_record(n + j) for j in range(1000)])
            n += 1000
        half = args.ids // 2
        predictions = [f"{i:032x}" for i in range(n - 4 * half, n, 4)]
        posts = [f"post-{i}" for i in range(1, 4 * half, 4)]
        started = time.perf_counter()
        found = log.lookup(predictions, posts)
        scan_s = time.perf_counter() - started
        started = time.perf_counter()
        frame = log.read().reindex(columns=list(LOOKUP_COLUMNS))
        baseline = frame[frame["prediction_id"].isin(predictions) | frame["post_id"].isin(posts)]
        read_s = time.perf_counter() - started
    same = sorted(found["prediction_id"]) == sorted(baseline["prediction_id"]) and len(found) == 2 * half
    ratio = read_s / scan_s
    print(f"{args.mb:g} MB of log ({n} records), {2 * half} ids: read all {read_s:.2f} s, scan {scan_s:.2f} s "
          f"({ratio:.1f}x faster), same records: {same}")
    print(json.dumps({"mb": args.mb, "records": n, "ids": 2 * half, "read_all_s": round(read_s, 3),
                      "scan_s": round(scan_s, 3), "ratio": round(ratio, 2), "same": same}))
    return 0 if same and ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
