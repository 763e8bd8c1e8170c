"""``detect_gaps`` alone on a store that benchmarks/analytics.py built, in CPU seconds.

    .venv/bin/python benchmarks/detect_gaps_time.py --workdir /tmp/bench/w [--messages 1000000]
        [--seed 1] [--repeat 3] [--save gaps.pkl] [--compare gaps.pkl]

The store's messages are loaded and turned into the contact timeline once (as the analytics
benchmark does), then :func:`pstlib.analytics.timeline.detect_gaps` runs ``--repeat`` times; each
run's CPU seconds (``time.process_time``: the measure that holds on a shared machine) and wall
seconds are printed, then the least of each. ``--save`` writes the last run's gaps to a pickle and
``--compare`` checks them against one written before (``pandas.testing.assert_frame_equal``,
exact): a speed-up must leave the gaps as they were. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from pstlib.analytics.timeline import contact_events, detect_gaps
from pstlib.store import Store
from pstlib.views import mail_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--save", type=Path, help="write the gaps to this pickle")
    parser.add_argument("--compare", type=Path, help="check the gaps against this pickle")
    args = parser.parse_args()
    stem = args.workdir / f"store-{args.messages}-s{args.seed}"
    info = json.loads(stem.with_suffix(".json").read_text())
    with Store.open(str(stem.with_suffix(".sqlite"))) as store:
        frames = mail_frames(store, info["session_id"])
    events = contact_events(frames.messages, frames.recipients, info["owner"])
    cpu: list[float] = []
    wall: list[float] = []
    gaps = pd.DataFrame()
    for run in range(args.repeat):
        began_cpu, began = time.process_time(), time.perf_counter()
        gaps = detect_gaps(events, country=info["country"])
        cpu.append(time.process_time() - began_cpu)
        wall.append(time.perf_counter() - began)
        print(f"run {run + 1}: cpu {cpu[-1]:.3f} s  wall {wall[-1]:.3f} s  gaps {len(gaps)}")
    if args.save:
        pd.to_pickle(gaps, args.save)
    same = None
    if args.compare:
        pd.testing.assert_frame_equal(pd.read_pickle(args.compare), gaps, check_exact=True)
        same = True
    print(
        json.dumps(
            {"cpu_s": round(min(cpu), 3), "wall_s": round(min(wall), 3), "gaps": len(gaps)}
            | ({} if same is None else {"identical": same})
        )
    )


if __name__ == "__main__":
    main()
