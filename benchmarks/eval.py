"""Timing of the Frame mAP evaluators on full-size inputs.

AVA: the AVA-validation-sized synthetic case of `benchmarks/ava_official.py` (57,408 keyframes, ~460k GT rows,
~2.34 M detections in the 80-class space with ties, duplicates and out-of-map ids) written as the official CSVs
and evaluated from the files with `ava_frame_map`; the time is split into parse (reading and validating the
CSVs), group (label-map filter, exclusions, keyframe keys, top-50 cap and reader order), match (TP flags) and
AP (PR curves and VOC AP). With --official the official algorithm (`ava_official.official_ava`) runs on the
same files and the ratio of the two times is printed (minutes). ACT: JHMDB split 1 (real GT from
../shared/data when present, else a generated GT of the same size) with 100 detections per frame.

    python benchmarks/eval.py [--quick] [--official] [--rounded]

--quick uses a tenth of the sizes; --rounded also times AVA scores rounded to 3 decimals (many ties, so many
keyframes take the exact heap-replay path).
"""
import argparse, os, pickle, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ovstad.core import ClassList
from ovstad.eval import AVA_DET_COLUMNS, act_frame_map, ava_frame_map, write_ava_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ava_official import make_ava_val, official_ava, write_case, _label_map_60

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent/'shared'/'data'

def make_act(rng, per_frame=100, quick=False):
    "JHMDB split 1 GT (real when available) and `per_frame` detections on every frame of its test videos."
    p = DATA/'jhmdb'/'JHMDB-GT.pkl'
    if p.exists():
        with open(p, 'rb') as f: gt = pickle.load(f, encoding='latin1'); src = str(p)
    else:                                                               # same size: 268 test videos, ~34 frames
        labels = [f"class{i}" for i in range(21)]
        vids = [f"v{i}" for i in range(268)]; nf = {v: int(rng.integers(15, 41)) for v in vids}
        tub = {v: {i % 21: [np.c_[np.arange(1, nf[v] + 1), np.tile([20, 20, 120, 200], (nf[v], 1))].astype(np.float32)]}
               for i, v in enumerate(vids)}
        gt = {'labels': labels, 'gttubes': tub, 'nframes': nf, 'train_videos': [[]], 'test_videos': [vids],
              'resolution': {v: (240, 320) for v in vids}}; src = 'generated (JHMDB-GT.pkl not found)'
    vlist = gt['test_videos'][0][: (27 if quick else None)]
    rows_v, rows_f, boxes = [], [], []
    for v in vlist:
        tube = next(iter(gt['gttubes'][v].values()))[0]
        for r in tube:
            rows_v.append(v); rows_f.append(int(r[0])); boxes.append(r[1:5])
    n = len(rows_v)
    v = np.repeat(rows_v, per_frame); f = np.repeat(rows_f, per_frame)
    b = np.repeat(np.array(boxes, np.float64), per_frame, 0) + rng.normal(0, 15, (n * per_frame, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
    det = pd.DataFrame({'video': v, 'frame': f, 'label': rng.integers(0, len(gt['labels']), n * per_frame),
                        'score': rng.uniform(size=n * per_frame), 'x1': b[:, 0], 'y1': b[:, 1], 'x2': b[:, 2], 'y2': b[:, 3]})
    return gt, det, src, n

def timed(fn):
    t = time.perf_counter(); out = fn(); return out, time.perf_counter() - t

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a tenth of the sizes')
    ap.add_argument('--official', action='store_true', help='also time the official AVA algorithm on the same files (minutes)')
    ap.add_argument('--rounded', action='store_true', help='also time AVA scores rounded to 3 decimals')
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    warnings.simplefilter('ignore')
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared machine: timings include contention)")
    # ---- ACT
    gt, det, src, n_frames = make_act(rng, quick=a.quick)
    res, s = timed(lambda: act_frame_map(gt, det, split=1))
    print(f"ACT  JHMDB split 1 [{src}]: {n_frames} frames x 100 = {len(det):,} detections: "
          f"{s:.2f} s ({len(det)/s:,.0f} detections/s), frame mAP {100*res.map:.2f}%  (target < 10 s)")
    # ---- AVA
    gt, det, excl = make_ava_val(rng, n_videos=7 if a.quick else 64)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        g, dt, ex = write_case(d, gt, det, excl)
        lm = _label_map_60(d)
        n_keys = det[['video_id', 'timestamp']].drop_duplicates().shape[0]
        res, s = timed(lambda: ava_frame_map(g, dt, lm, exclusions=ex, unannotated='fp'))
        split = ', '.join(f"{k} {v:.2f} s" for k, v in res.timings.items())
        print(f"AVA  {n_keys:,} keyframes, {len(gt):,} GT rows, {len(det):,} detections ({res.n_dropped_out_of_map:,} out of "
              f"the {len(res.classes)}-class map), from CSV files: {s:.2f} s ({split}), frame mAP {100*res.map:.4f}%")
        if a.official:
            (m_off, _), s_off = timed(lambda: official_ava(lm, g, dt, ex))
            print(f"AVA  official algorithm on the same files: {s_off:.1f} s, frame mAP {100*m_off:.4f}%; "
                  f"ovstad is {s_off / s:.0f}x faster; mAP difference {res.map - m_off:+.2e}")
        res2, s = timed(lambda: ava_frame_map(gt, det, lm, exclusions=excl.itertuples(index=False), unannotated='fp'))
        print(f"AVA  same input as DataFrames: {s:.2f} s, same mAP: {res2.map == res.map}")
        if a.rounded:
            det_r = det.assign(score=det['score'].round(3))
            res3, s = timed(lambda: ava_frame_map(gt, det_r, lm, exclusions=excl.itertuples(index=False)))
            print(f"AVA  scores rounded to 3 decimals (ties -> exact heap replay): {s:.2f} s "
                  f"({len(det)/s:,.0f} detections/s), frame mAP {100*res3.map:.2f}%")

if __name__ == '__main__':
    sys.exit(main())
