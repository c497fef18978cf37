"""Frame mAP evaluators (ovstad.eval): hand-computed cases, real files, and straight-loop references.

The reference functions below follow the published evaluators step by step (one detection at a time, dicts
and heaps), so the vectorized code is checked against a second, independent reading of the same rules.
"""
import heapq, json, os, pickle, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ovstad.core import ClassList, OvstadError
from ovstad.eval import (ACT_COLUMNS, AVA_DET_COLUMNS, AVA_GT_COLUMNS, act_frame_map, ava_frame_map,
                         write_act_detections, write_ava_detections, plot_result)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent/'shared'/'data'
JHMDB = DATA/'jhmdb'/'JHMDB-GT.pkl'
AVA = DATA/'ava-sample'
BIN = Path(sys.executable).parent
needs_jhmdb = pytest.mark.skipif(not JHMDB.exists(), reason=f"real JHMDB GT not found at {JHMDB} (../shared/data absent)")
needs_ava = pytest.mark.skipif(not AVA.exists(), reason=f"AVA samples not found at {AVA} (../shared/data absent)")

# ---------------------------------------------------------------- references (one detection at a time)

def ref_act(gt, det, split=1, th=0.5):
    "ACT frameAP, literally: per class, visit argsort(-score), compare with what remains of the frame's GT."
    vlist = gt['test_videos'][split - 1]; vi = {v: i for i, v in enumerate(vlist)}
    det = det[det['video'].isin(vi)]
    arr = np.stack([det['video'].map(vi).to_numpy(float), det['frame'].to_numpy(float), det['label'].to_numpy(float),
                    det['score'].to_numpy(float), *[det[c].to_numpy(float) for c in ('x1', 'y1', 'x2', 'y2')]], 1).astype(np.float32)
    aps = []
    for c in range(len(gt['labels'])):
        d = arr[arr[:, 2] == c]
        g = {}
        for i, v in enumerate(vlist):
            for tube in gt['gttubes'][v].get(c, []):
                for row in tube: g.setdefault((i, int(row[0])), []).append(row[1:5].tolist())
        g = {k: np.array(b) for k, b in g.items()}
        pr = np.empty((len(d) + 1, 2), np.float32); pr[0] = 1, 0
        fn, tp, fp = sum(len(b) for b in g.values()), 0, 0
        for i, j in enumerate(np.argsort(-d[:, 3])):
            k, box, hit = (int(d[j, 0]), int(d[j, 1])), d[j, 4:8][None], False
            if k in g:
                b = g[k]
                w = np.maximum(0, np.minimum(b[:, 2] + 1, box[:, 2] + 1) - np.maximum(b[:, 0], box[:, 0]))
                h = np.maximum(0, np.minimum(b[:, 3] + 1, box[:, 3] + 1) - np.maximum(b[:, 1], box[:, 1]))
                ov = w * h
                iou = ov / ((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) + (box[:, 2] - box[:, 0] + 1) * (box[:, 3] - box[:, 1] + 1) - ov)
                m = int(np.argmax(iou))
                if iou[m] >= th:
                    hit = True; g[k] = np.delete(b, m, 0)
                    if not g[k].size: del g[k]
            tp, fn, fp = tp + hit, fn - hit, fp + (not hit)
            pr[i + 1] = tp / (tp + fp), (tp / (tp + fn) if tp + fn else 0.0)   # ACT divides by zero here
        aps.append(float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5)))
    return aps

def _reader(rows, whitelist, capacity):
    "The official CSV reader: per key a heap of (score, action, y1, x1, y2, x2), sorted by -score at the end."
    entries = {}
    for r in rows:
        key = (str(r[0]), int(r[1])); a = int(r[6])
        if a not in whitelist: continue
        s = float(r[7]) if len(r) == 8 else 1.0
        t = (s, a, float(r[3]), float(r[2]), float(r[5]), float(r[4]))
        h = entries.setdefault(key, [])
        if capacity < 1 or len(h) < capacity: heapq.heappush(h, t)
        elif s > h[0][0]: heapq.heapreplace(h, t)
    return {k: sorted(h, key=lambda t: -t[0]) for k, h in entries.items()}

def ref_ava(gt_rows, det_rows, ids, excluded=(), th=0.5, gt_key_filter=False):
    "The official AVA evaluation, literally (PascalDetectionEvaluator with per-image loops); optionally with the GT-key filter."
    wl = set(ids); excluded = set(excluded)
    gt = {k: v for k, v in _reader(gt_rows, wl, 0).items() if k not in excluded}
    det = {k: v for k, v in _reader(det_rows, wl, 50).items() if k not in excluded and (k in gt or not gt_key_filter)}
    ngt = {c: sum(t[1] == c for v in gt.values() for t in v) for c in ids}
    scores = {c: [] for c in ids}; labels = {c: [] for c in ids}
    for k, dets in det.items():
        dets = [t for t in dets if t[2] < t[4] and t[3] < t[5]]
        for c in ids:
            d = [t for t in dets if t[1] == c]
            if not d: continue
            g = np.array([t[2:] for t in gt.get(k, []) if t[1] == c]).reshape(-1, 4)
            flags = []
            used = np.zeros(len(g), bool)
            for t in d:
                if not len(g): flags.append(False); continue
                b = np.array(t[2:])
                ih = np.maximum(0, np.minimum(b[2], g[:, 2]) - np.maximum(b[0], g[:, 0]))
                iw = np.maximum(0, np.minimum(b[3], g[:, 3]) - np.maximum(b[1], g[:, 1]))
                inter = ih * iw
                iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter)
                m = int(np.argmax(iou))
                ok = iou[m] >= th and not used[m]
                if ok: used[m] = True
                flags.append(bool(ok))
            scores[c].append(np.array([t[0] for t in d])); labels[c].append(np.array(flags))
    aps = {}
    for c in ids:
        if ngt[c] == 0: aps[c] = float('nan'); continue
        if not scores[c]: aps[c] = 0.0; continue
        s, l = np.concatenate(scores[c]), np.concatenate(labels[c]).astype(int)
        o = np.argsort(s)[::-1]
        ctp, cfp = np.cumsum(l[o]), np.cumsum(1 - l[o])
        p, r = ctp / (ctp + cfp), ctp / ngt[c]
        r = np.concatenate([[0], r, [1]]); p = np.concatenate([[0], p, [0]])
        for i in range(len(p) - 2, -1, -1): p[i] = max(p[i], p[i + 1])
        i = np.where(r[1:] != r[:-1])[0] + 1
        aps[c] = float(np.sum((r[i] - r[i - 1]) * p[i]))
    return aps

# ---------------------------------------------------------------- ACT

def _rand_act_gt(rng, n_videos=6, n_labels=3):
    gtt, nf = {}, {}
    for v in range(n_videos):
        name = f"v{v}"; nf[name] = int(rng.integers(4, 9)); c = int(rng.integers(n_labels))
        tubes = []
        for p in range(int(rng.integers(1, 4))):              # up to 3 people doing the same action
            x = rng.uniform(0, 60); y = rng.uniform(0, 30)
            fr = np.arange(1, nf[name] + 1)
            tubes.append(np.stack([fr, x + fr, y + 0 * fr, x + fr + 30, y + 40 + 0 * fr], 1).astype(np.float32))
        gtt[name] = {c: tubes}
    names = list(gtt)
    return {'labels': [f"c{i}" for i in range(n_labels)], 'gttubes': gtt, 'nframes': nf,
            'train_videos': [names[:1]], 'test_videos': [names[1:]], 'resolution': {v: (80, 120) for v in names}}

def _rand_act_det(rng, gt, n=400):
    vids = list(gt['nframes'])
    rows = []
    for _ in range(n):
        v = vids[int(rng.integers(len(vids)))]; f = int(rng.integers(1, gt['nframes'][v] + 1))
        c = int(rng.integers(len(gt['labels'])))
        tubes = [t for ts in gt['gttubes'][v].values() for t in ts]
        b = tubes[int(rng.integers(len(tubes)))][f - 1, 1:5] + rng.normal(0, 6, 4)
        b[2:] = np.maximum(b[2:], b[:2])
        rows.append([v, f, c, round(float(rng.uniform()), 1), *b.tolist()])   # 1 decimal: many ties
    return pd.DataFrame(rows, columns=ACT_COLUMNS)

@pytest.mark.parametrize('seed', range(6))
def test_act_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    gt = _rand_act_gt(rng); det = _rand_act_det(rng, gt)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = act_frame_map(gt, det)
    ref = ref_act(gt, det)
    np.testing.assert_allclose([res.per_class[n] for n in gt['labels']], ref, rtol=0, atol=1e-7)

def test_act_hand_case_second_gt_box():
    # two people in one frame; a detection whose best box was already taken matches the other one (ACT fallback)
    box = lambda x: [x, 0, x + 19, 19]
    gt = {'labels': ['a'], 'gttubes': {'v': {0: [np.array([[1, *box(0)]], np.float32), np.array([[1, *box(10)]], np.float32)]}},
          'nframes': {'v': 1}, 'train_videos': [[]], 'test_videos': [['v']], 'resolution': {'v': (20, 40)}}
    det = pd.DataFrame([['v', 1, 0, .9, *box(0)], ['v', 1, 0, .8, *box(2)], ['v', 1, 0, .7, *box(2)]], columns=ACT_COLUMNS)
    # det 2 (x 2..21): IoU with box 0 (x 0..19) = 360/440 = .82, with box 10 (x 10..29) = 240/560 = .43;
    # box 0 is taken by det 1 -> best remaining is box 10 at .43 < .5 -> FP; det 3 the same
    res = act_frame_map(gt, det)
    # P = 1, .5, .33; R = .5, .5, .5 -> AP = .5 * (1 + 1) / 2
    assert res.per_class['a'] == pytest.approx(0.5, abs=1e-6)
    det2 = det.copy(); det2.loc[1, ['x1', 'x2']] = [5, 24]    # IoU .6 with box 0 (taken) and .6 with box 10 -> TP on box 10
    res2 = act_frame_map(gt, det2)
    assert res2.per_class['a'] == pytest.approx(1.0, abs=1e-6)   # TP, TP (fallback to box 10): R reaches 1 at P 1
    assert res2.per_class['a'] == pytest.approx(ref_act(gt, det2)[0], abs=1e-7)

@pytest.fixture(scope='module')
def jhmdb():
    with open(JHMDB, 'rb') as f: return pickle.load(f, encoding='latin1')

def _perfect(gt, split=1, per_frame=None):
    rows = []
    for v in gt['test_videos'][split - 1]:
        for c, tubes in gt['gttubes'][v].items():
            for t in tubes:
                for r in t: rows.append([v, int(r[0]), c, 1.0, *r[1:5].tolist()])
    return pd.DataFrame(rows, columns=ACT_COLUMNS)

@needs_jhmdb
def test_jhmdb_perfect_detections_give_map_1(jhmdb):
    res = act_frame_map(JHMDB, _perfect(jhmdb))
    assert len(res.classes) == 21 and res.map == pytest.approx(1.0, abs=1e-5)
    assert all(a == pytest.approx(1.0, abs=1e-5) for a in res.per_class.values())

@needs_jhmdb
def test_jhmdb_jittered_and_shuffled_detections(jhmdb):
    rng = np.random.default_rng(0)
    det = _perfect(jhmdb)
    vids = det['video'].unique()
    # 1) a third of the videos get a wrong label (their frames are FPs of that label and misses of the true one)
    wrong = set(rng.choice(vids, len(vids) // 3, replace=False))
    is_wrong = det['video'].isin(wrong).to_numpy()
    det.loc[is_wrong, 'label'] = (det.loc[is_wrong, 'label'] + rng.integers(1, 21, is_wrong.sum())) % 21
    # 2) a quarter of the frames are shifted by 60% of the box width -> IoU < .5 (FP + miss)
    shift = rng.uniform(size=len(det)) < 0.25
    w = (det['x2'] - det['x1'] + 1).to_numpy()
    det.loc[shift, 'x1'] += 0.6 * w[shift]; det.loc[shift, 'x2'] += 0.6 * w[shift]
    good = ~is_wrong & ~shift
    n_good = det[good].groupby('label').size()
    # correct detections score above every wrong one -> per class: precision 1 up to recall good/GT, then flat
    det['score'] = np.where(good, 0.5 + 0.5 * rng.uniform(size=len(det)), 0.4 * rng.uniform(size=len(det)))
    det = det.sample(frac=1, random_state=1).reset_index(drop=True)       # row order must not matter
    res = act_frame_map(jhmdb, det)
    gt_frames = _perfect(jhmdb)
    n_gt = gt_frames.groupby('label').size()
    n_good = n_good.reindex(n_gt.index, fill_value=0)
    expect = (n_good / n_gt).to_numpy()
    np.testing.assert_allclose([res.per_class[n] for n in jhmdb['labels']], expect, atol=1e-5)
    assert res.map == pytest.approx(expect.mean(), abs=1e-5)

@needs_jhmdb
def test_jhmdb_split_subset_and_bad_input(jhmdb):
    det = _perfect(jhmdb).iloc[:200]
    labels = jhmdb['labels']
    res = act_frame_map(jhmdb, det, classes=labels[:3])
    assert res.classes.names == tuple(labels[:3])
    bad = det.copy(); bad.loc[5, 'frame'] = 10_000
    with pytest.raises(OvstadError, match=r'1 row\(s\) have a frame outside 1..nframes of their video \(rows 5'):
        act_frame_map(jhmdb, bad)
    train = pd.DataFrame([[jhmdb['train_videos'][0][0], 1, 0, .5, 0, 0, 10, 10]], columns=ACT_COLUMNS)
    with pytest.warns(UserWarning, match='outside the split-1 test list'):
        act_frame_map(jhmdb, pd.concat([det, train], ignore_index=True))

# ---------------------------------------------------------------- AVA

def _rand_ava(rng, n_keys=12, n_cls=4, per_key=60, ties=True, grid=False):
    ids = [1, 3, 5, 8][:n_cls]
    gt, det = [], []
    for k in range(n_keys):
        v, ts = f"vid{k % 3}", 902 + k
        if k % 5 != 4:                                         # some keyframes have no GT at all
            for p in range(int(rng.integers(1, 4))):
                x, y = rng.uniform(0, .5, 2); b = [x, y, x + .4, y + .45]
                if grid: b = [round(x, 1), 0.1, round(x, 1) + .4, .5]   # boxes on a grid: equal IoUs, repeated boxes
                for c in rng.choice(ids + [2], int(rng.integers(1, 3)), replace=False):   # 2: not in the label map
                    gt.append([v, ts, *np.round(b, 3), int(c), 0 if grid else p])     # grid: one person id for all
        for _ in range(int(rng.integers(per_key // 2, per_key + 10))):
            x, y = rng.uniform(0, .5, 2)
            s = round(float(rng.uniform()), 1 if ties else 6)
            b = [round(x, 1) + .05, 0.1, round(x, 1) + .45, .5] if grid else [x, y, x + .4, y + .45]
            det.append([v, ts, *np.round(b, 3), int(rng.choice(ids + [2])), s])
        det.append([v, ts, .2, .2, .2, .5, ids[0], .95])      # zero width: dropped after the cap
    gt.append(['vid0', 902, .1, .1, .2, .2, 2, 9])            # id 2 exists in the GT (not in the map)
    return ids, gt, det

@pytest.mark.parametrize('seed,ties,grid', [(0, True, False), (1, True, False), (2, True, True), (3, False, False),
                                            (4, True, True), (5, False, True)])
def test_ava_matches_reference_loop(seed, ties, grid, tmp_path):
    rng = np.random.default_rng(seed)
    ids, gt, det = _rand_ava(rng, ties=ties, grid=grid)
    lm = ClassList(tuple(ids), tuple(f"a{i}" for i in ids))
    excl = [("vid1", 903)]
    ref = ref_ava(gt, det, ids, excluded=excl)
    g = pd.DataFrame(gt, columns=AVA_GT_COLUMNS); d = pd.DataFrame(det, columns=AVA_DET_COLUMNS)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = ava_frame_map(g, d, lm, exclusions=excl, unannotated='fp')
        res_i = ava_frame_map(g, d, lm, exclusions=excl)          # default: GT-key filter
        # and through files in the official layout
        g.assign(timestamp=g['timestamp'].map('{:04d}'.format)).to_csv(tmp_path/'gt.csv', header=False, index=False)
        write_ava_detections(d, tmp_path/'det.csv')
        pd.DataFrame(excl).to_csv(tmp_path/'ex.csv', header=False, index=False)
        res_f = ava_frame_map(tmp_path/'gt.csv', tmp_path/'det.csv', lm, exclusions=tmp_path/'ex.csv', unannotated='fp')
    got = [res.per_class[f"a{i}"] for i in ids]
    np.testing.assert_allclose(got, [ref[i] for i in ids], rtol=0, atol=1e-12)
    np.testing.assert_allclose([res_f.per_class[f"a{i}"] for i in ids], got, rtol=0, atol=1e-12)
    assert res.map == pytest.approx(np.nanmean([ref[i] for i in ids]), abs=1e-12)
    ref_i = ref_ava(gt, det, ids, excluded=excl, gt_key_filter=True)
    np.testing.assert_allclose([res_i.per_class[f"a{i}"] for i in ids], [ref_i[i] for i in ids], rtol=0, atol=1e-12)

def test_ava_top50_tie_at_the_cut():
    # 49 strong detections, then three at the same score competing for the last slot; only one is a TP.
    A = [0.1, 0.1, 0.5, 0.9]
    gt = [['v', 902, *A, 1, 0]]
    far = [0.6, 0.1, 0.9, 0.3]
    det = [['v', 902, *far, 3, 0.9]] * 49
    det += [['v', 902, *A, 1, 0.5], ['v', 902, *far, 3, 0.5], ['v', 902, *far, 5, 0.5]]
    ids = [1, 3, 5]; lm = ClassList((1, 3, 5), ('x', 'y', 'z'))
    ref = ref_ava(gt, det, ids)
    res = ava_frame_map(pd.DataFrame(gt, columns=AVA_GT_COLUMNS), pd.DataFrame(det, columns=AVA_DET_COLUMNS), lm)
    assert res.per_class['x'] == ref[1]
    # the heap keeps the first of the tied rows seen and rejects later equal scores: the TP (first) survives
    assert res.per_class['x'] == 1.0
    det2 = det[:49] + det[49:][::-1]                       # now the TP arrives last among the tied rows: rejected
    res2 = ava_frame_map(pd.DataFrame(gt, columns=AVA_GT_COLUMNS), pd.DataFrame(det2, columns=AVA_DET_COLUMNS), lm)
    assert res2.per_class['x'] == ref_ava(gt, det2, ids)[1] == 0.0

@needs_ava
def test_ava_sample_files():
    with open(AVA/'ava_proposals_sample.pkl', 'rb') as f: props = pickle.load(f)
    lm = AVA/'action_list.txt'
    rows = []
    for key, arr in props.items():
        v, ts = key.split(',')
        for b in arr:
            for c in (12, 17, 79, 80): rows.append([v, int(ts), *b[:4].tolist(), c, float(b[4])])
    det = pd.DataFrame(rows, columns=AVA_DET_COLUMNS)
    with pytest.warns(UserWarning):       # GT label 74 is not in the label map; duplicate names in the map
        res = ava_frame_map(AVA/'ava_sample.csv', det, lm)
    # GT: 0f39..,0902 {12, 17, 79}; 0f39..,0903 {12, 17}; _-Z6..,0902 {12, 80} (74 dropped)
    # proposals: one per 0f39 keyframe (IoU > .9 with the GT), three on _-Z6 of which only the .994 one matches
    # class 12 (3 GT), by score: .998 TP, .997 TP, .996 FP, .994 TP, .281 FP -> VOC AP = 1/3 + 1/3 + 1/3 * 3/4
    assert res.per_class['action1'] == pytest.approx(1/3 + 1/3 + 0.25)
    # class 17 (2 GT): .998 TP, .997 TP, then FPs -> 1; class 79 (1 GT): .998 TP -> 1
    assert res.per_class['action2'] == pytest.approx(1.0) and res.per_class['action3 [79]'] == pytest.approx(1.0)
    # class 80 (1 GT on _-Z6): .998, .997, .996 FP (keyframes or boxes without it), .994 TP -> P at R=1 is 1/4
    assert res.per_class['action3 [80]'] == pytest.approx(0.25)
    assert res.map == pytest.approx(np.mean([1/3 + 1/3 + 0.25, 1, 1, 0.25]))
    with pytest.warns(UserWarning):
        ex = ava_frame_map(AVA/'ava_sample.csv', det, lm, exclusions=AVA/'ava_excluded_timestamps_sample.csv')
    # only 0f39..,0902 is left: its three classes are perfect, class 80 has no GT any more (NaN, not averaged)
    assert ex.per_class['action1'] == 1.0 and np.isnan(ex.per_class['action3 [80]']) and ex.map == 1.0
    # the official 60-class map also holds id 74 (listen to a person): its GT box is kept, has no detection -> AP 0
    full = ava_frame_map(AVA/'ava_sample.csv', det, AVA/'ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt')
    assert len(full.classes) == 60 and full.per_class['listen to (a person)'] == 0.0
    assert full.map == pytest.approx(np.mean([1/3 + 1/3 + 0.25, 1, 1, 0.25, 0]))
    assert '60 classes (ids 1..80)' in repr(full)

@needs_ava
def test_ava_sample_bad_label_map(tmp_path):
    (tmp_path/'map.txt').write_text('0: a\n1: b\n')
    det = pd.DataFrame([['0f39OWEqJ24', 902, .1, .1, .5, .9, 1, .5]], columns=AVA_DET_COLUMNS)
    with pytest.raises(OvstadError, match='does not cover this GT'):
        ava_frame_map(AVA/'ava_sample.csv', det, tmp_path/'map.txt')

def test_empty_detections_warn_and_give_zero():
    gt = pd.DataFrame([['v', 902, .1, .1, .5, .9, 1, 0]], columns=AVA_GT_COLUMNS)
    with pytest.warns(UserWarning, match='empty'):
        res = ava_frame_map(gt, pd.DataFrame(columns=AVA_DET_COLUMNS), ClassList((1,), ('a',)))
    assert res.map == 0.0

# ---------------------------------------------------------------- CLI and plots

@needs_ava
def test_cli_ava(tmp_path):
    det = pd.DataFrame([['0f39OWEqJ24', 902, 0.031, 0.162, 0.670, 0.995, 12, 0.9]], columns=AVA_DET_COLUMNS)
    write_ava_detections(det, tmp_path/'d.csv')
    cmd = [str(BIN/'ovstad'), 'eval', 'ava', str(AVA/'ava_sample.csv'), str(tmp_path/'d.csv'),
           '--label-map', str(AVA/'ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt'), '--json', str(tmp_path/'r.json')]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr
    assert 'AP (%)' in r.stdout and 'frame mAP@0.5' in r.stdout
    d = json.loads((tmp_path/'r.json').read_text())
    assert d['protocol'] == 'ava' and d['per_class']['stand'] == pytest.approx(1/3)   # 1 TP of 3 GT at P 1
    assert d['map'] == pytest.approx(1/3 / 5)          # 5 classes have GT (12, 17, 74, 79, 80)

def test_cli_errors_and_help(tmp_path, capsys):
    from ovstad.cli import main
    gt = pd.DataFrame([['v', 902, .1, .1, .5, .9, 1, 0]], columns=AVA_GT_COLUMNS)
    gt.to_csv(tmp_path/'gt.csv', header=False, index=False)
    (tmp_path/'map.txt').write_text('1: stand\n')
    pd.DataFrame([['v', 902, .5, .1, .1, .9, 1, .5]]).to_csv(tmp_path/'bad.csv', header=False, index=False)
    assert main(['eval', 'ava', str(tmp_path/'gt.csv'), str(tmp_path/'bad.csv'), '--label-map', str(tmp_path/'map.txt')]) == 2
    assert 'x2 < x1' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: main(['eval', 'act', '--help'])
    assert e.value.code == 0 and 'example' in capsys.readouterr().out

def test_plots():
    import matplotlib; matplotlib.use('agg')
    gt = pd.DataFrame([['v', 902, .1, .1, .5, .9, 1, 0], ['v', 902, .1, .1, .5, .9, 2, 0]], columns=AVA_GT_COLUMNS)
    det = pd.DataFrame([['v', 902, .1, .1, .5, .9, 1, .9]], columns=AVA_DET_COLUMNS)
    res = ava_frame_map(gt, det, ClassList((1, 2), ('a', 'b')))
    assert plot_result(res, 'bars').get_title().startswith('AVA frame mAP@0.5 = 50.00%')
    assert len(plot_result(res, 'pr').lines) == 1
    with pytest.raises(OvstadError): plot_result(res, 'pie')

# ---------------------------------------------------------------- fidelity: out-of-map rows, ties, precision, thresholds

def _ava_ref_files(tmp_path, gt, det, ids):
    "The rows written as official CSVs and a pbtxt map, for the literal reference and the file path of ava_frame_map."
    g = pd.DataFrame(gt, columns=AVA_GT_COLUMNS); d = pd.DataFrame(det, columns=AVA_DET_COLUMNS)
    g.assign(timestamp=g['timestamp'].map('{:04d}'.format)).to_csv(tmp_path/'gt.csv', header=False, index=False)
    write_ava_detections(d, tmp_path/'det.csv')
    (tmp_path/'map.pbtxt').write_text(''.join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in ids))
    return tmp_path/'gt.csv', tmp_path/'det.csv', tmp_path/'map.pbtxt'

@pytest.mark.parametrize('mode', ['fp', 'ignore'])
def test_ava_out_of_map_rows_are_dropped_and_counted(mode, tmp_path):
    # an 80-class detection file on a 4-class map; ids 2, 40 and 80 are in neither the map nor (40, 80) the GT
    rng = np.random.default_rng(7)
    ids, gt, det = _rand_ava(rng, ties=False)
    extra = [[r[0], r[1], *r[2:6], int(rng.choice([2, 40, 80])), float(rng.uniform())] for r in det[::3]]
    both = det + extra
    lm = ClassList(tuple(ids), tuple(f"a{i}" for i in ids))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        clean = ava_frame_map(pd.DataFrame(gt, columns=AVA_GT_COLUMNS), pd.DataFrame([r for r in det if r[6] in ids],
                              columns=AVA_DET_COLUMNS), lm, unannotated=mode)
    g, d, m = _ava_ref_files(tmp_path, gt, both, ids)
    with pytest.warns(UserWarning, match=r'detection row\(s\) with action ids 2, 40, 80 are not in the label map'):
        res = ava_frame_map(g, d, m, unannotated=mode)
    n_out = sum(r[6] not in ids for r in both)
    assert res.n_dropped_out_of_map == n_out and res.to_dict()['n_dropped_out_of_map'] == n_out
    assert res.map == clean.map
    ref = ref_ava(gt, both, ids, gt_key_filter=(mode == 'ignore'))
    np.testing.assert_allclose([res.per_class[f"a{i}"] for i in ids], [ref[i] for i in ids], rtol=0, atol=1e-12)

def test_ava_out_of_map_rows_skip_the_video_check_and_bad_ids_still_fail(tmp_path):
    gt = [['v', 902, .1, .1, .5, .9, 1, 0]]
    det = [['v', 902, .1, .1, .5, .9, 1, .9], ['other_video', 902, .1, .1, .5, .9, 77, .8]]   # dropped before any check
    g, d, m = _ava_ref_files(tmp_path, gt, det, [1])
    with pytest.warns(UserWarning, match='1 detection row'):
        assert ava_frame_map(g, d, m).map == 1.0
    (tmp_path/'bad.csv').write_text('v,0902,0.1,0.1,0.5,0.9,x1,0.5\n')       # the official int() fails here too
    with pytest.raises(OvstadError, match=r'bad.csv:[0-9]+: 1 row\(s\) have a NaN or non-numeric .*action id'):
        ava_frame_map(g, tmp_path/'bad.csv', m)

def _official_heap_order(rows, cap=50):
    "Which rows (indices) the official reader keeps for one keyframe, in its output order."
    h = []
    for i, r in enumerate(rows):
        t = (r[7], r[6], r[3], r[2], r[5], r[4], -i)        # -i only to recover the row; never reached by equal tuples here
        if len(h) < cap: heapq.heappush(h, t)
        elif t[0] > h[0][0]: heapq.heapreplace(h, t)
    return [-t[-1] for t in sorted(h, key=lambda t: -t[0])]

@pytest.mark.parametrize('seed', range(8))
def test_ava_ties_inside_the_top50_cap(seed, tmp_path):
    # 60 rows on one keyframe, scores on a coarse grid: ties at the cut, and same-class ties among the kept rows
    # where two tied detections both reach the one GT box: the heap's order decides which is the TP
    rng = np.random.default_rng(seed)
    A = [0.1, 0.1, 0.5, 0.9]
    gt = [['v', 902, *A, 1, 0], ['v', 902, .5, .1, .9, .9, 3, 1]]
    det = []
    for _ in range(60):
        c = int(rng.choice([1, 3, 5]))
        x = float(rng.choice([0.1, 0.12, 0.5, 0.52]))            # two boxes per person: both reach IoU >= .5
        det.append(['v', 902, x, 0.1, x + .4, 0.9, c, float(rng.choice([.3, .5, .7]))])
    det.append(['v', 903, *A, 1, .5])                            # a keyframe without GT
    ids = [1, 3, 5]
    g, d, m = _ava_ref_files(tmp_path, gt, det, ids)
    for mode in ('fp', 'ignore'):
        res = ava_frame_map(g, d, m, unannotated=mode)
        ref = ref_ava(gt, det, ids, gt_key_filter=(mode == 'ignore'))
        assert [res.per_class[f"a{i}"] for i in ids] == pytest.approx([ref[i] for i in ids], abs=1e-12, nan_ok=True)
    # the tied rows that compete for box A: which one comes first is the heap's array order, not file order
    kept = _official_heap_order([r for r in det if r[1] == 902])
    assert len(kept) == 50

def test_ava_iou_exactly_at_the_threshold(tmp_path):
    # 3-decimal boxes whose IoU is 0.5 in exact arithmetic; the float64 of the official operation order decides:
    # 0.4999999999999999 -> FP, 0.5 -> TP, 0.5000000000000001 -> TP
    cases = [([0.1, 0.1, 0.5, 0.3], [0.1, 0.1, 0.3, 0.3], False),      # x1, y1, x2, y2 of GT, detection
             ([0.35, 0.05, 0.85, 0.3], [0.35, 0.05, 0.6, 0.3], True),
             ([0.2, 0.123, 0.3, 0.423], [0.2, 0.123, 0.25, 0.423], True),
             ([0.15, 0.7, 0.45, 0.9], [0.15, 0.7, 0.3, 0.9], False)]
    gt, det = [], []
    for i, (gb, db, _) in enumerate(cases):
        gt.append(['v', 902 + i, *gb, 1, 0]); det.append(['v', 902 + i, *db, 1, 0.9 - i / 10])
    g, d, m = _ava_ref_files(tmp_path, gt, det, [1])
    res = ava_frame_map(g, d, m)
    tp = [c[2] for c in cases]
    # TP, FP pattern by descending score -> VOC AP by hand: recall steps at each TP, envelope from the right
    prec = np.cumsum(tp) / np.arange(1, 5); rec = np.cumsum(tp) / 4
    expect = sum((r1 - r0) * max(prec[j:]) for j, (r0, r1) in enumerate(zip(np.r_[0, rec[:-1]], rec)) if r1 > r0)
    assert res.per_class['a1'] == pytest.approx(expect, abs=1e-15)
    assert res.per_class['a1'] == ref_ava(gt, det, [1])[1]
    from ovstad.eval import ava_iou
    got = [ava_iou(np.array([db])[:, [1, 0, 3, 2]], np.array([gb])[:, [1, 0, 3, 2]])[0, 0] for gb, db, _ in cases]
    assert [x >= 0.5 for x in got] == tp and 0.5 in got
    # the same threshold rule in ACT: a 10x10 box against its right half is exactly 0.5 with +1 areas -> TP
    box = [0, 0, 9, 9]
    gta = {'labels': ['a'], 'gttubes': {'v': {0: [np.array([[1, *box]], np.float32)]}}, 'nframes': {'v': 1},
           'train_videos': [[]], 'test_videos': [['v']], 'resolution': {'v': (20, 20)}}
    assert act_frame_map(gta, pd.DataFrame([['v', 1, 0, .9, 5, 0, 9, 9]], columns=ACT_COLUMNS)).per_class['a'] == 1.0
    assert act_frame_map(gta, pd.DataFrame([['v', 1, 0, .9, 5.01, 0, 9, 9]], columns=ACT_COLUMNS)).per_class['a'] == 0.0

def test_ava_csv_parsing_matches_python_float(tmp_path):
    # the official reader parses with float(); 17+ digit and short decimals must give the same doubles
    rng = np.random.default_rng(3)
    strs = [repr(float(x)) for x in rng.uniform(0, .5, 400)] + ['0.' + ''.join(rng.choice(list('01234'), 25))
                                                                for _ in range(400)]
    rows = [f"v,0902,{strs[i]},0.1,0.9,0.9,1,{strs[-1 - i]}" for i in range(len(strs))]
    (tmp_path/'d.csv').write_text('\n'.join(rows) + '\n')
    from ovstad.eval import read_ava_table
    df, _ = read_ava_table(tmp_path/'d.csv', 'det')
    assert df['x1'].tolist() == [float(s) for s in strs]
    assert df['score'].tolist() == [float(s) for s in strs[::-1]]

def ref_act_official(gt, det, split=1, th=0.5):
    "MOC-Detector frameAP step by step: one float32 array of all rows, float32 PR table, float32 pr_to_ap."
    vlist = gt['test_videos'][split - 1]; vi = {v: i for i, v in enumerate(vlist)}
    det = det[det['video'].isin(vi)]
    alldets = np.array([[vi[r.video], r.frame, r.label, r.score, r.x1, r.y1, r.x2, r.y2] for r in det.itertuples()],
                       dtype=np.float32).reshape(-1, 8)
    aps = []
    for il in range(len(gt['labels'])):
        d = alldets[alldets[:, 2] == il, :]
        g = {}
        for iv, v in enumerate(vlist):
            for tube in gt['gttubes'][v].get(il, []):
                for i in range(tube.shape[0]): g.setdefault((iv, int(tube[i, 0])), []).append(tube[i, 1:5].tolist())
        g = {k: np.array(b) for k, b in g.items()}
        pr = np.empty((d.shape[0] + 1, 2), dtype=np.float32); pr[0, 0] = 1.0; pr[0, 1] = 0.0
        fn, fp, tp = sum(b.shape[0] for b in g.values()), 0, 0
        for i, j in enumerate(np.argsort(-d[:, 3])):
            k = (int(d[j, 0]), int(d[j, 1])); box = d[j, 4:8][None]; pos = False
            if k in g:
                b = g[k]
                xmin = np.maximum(b[:, 0], box[:, 0]); ymin = np.maximum(b[:, 1], box[:, 1])
                xmax = np.minimum(b[:, 2] + 1, box[:, 2] + 1); ymax = np.minimum(b[:, 3] + 1, box[:, 3] + 1)
                ov = np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)
                ious = ov / ((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) + (box[:, 2] - box[:, 0] + 1) * (box[:, 3] - box[:, 1] + 1) - ov)
                am = np.argmax(ious)
                if ious[am] >= th:
                    pos = True; g[k] = np.delete(b, am, 0)
                    if g[k].size == 0: del g[k]
            if pos: tp += 1; fn -= 1
            else: fp += 1
            pr[i + 1, 0] = float(tp) / float(tp + fp); pr[i + 1, 1] = float(tp) / float(tp + fn)
        aps.append(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))
    return aps

def test_act_float32_near_ties_hand_case():
    # one GT box; an FP at 0.5 + 1e-9 and a TP at 0.5: distinct in float64, equal in float32. ACT ties them and,
    # on this short array, numpy's argsort leaves file order: TP first -> AP 1 (a float64 order would give 0.25)
    box = [0, 0, 19, 19]
    gt = {'labels': ['a'], 'gttubes': {'v': {0: [np.array([[1, *box]], np.float32)]}}, 'nframes': {'v': 1},
          'train_videos': [[]], 'test_videos': [['v']], 'resolution': {'v': (20, 40)}}
    det = pd.DataFrame([['v', 1, 0, 0.5, *box], ['v', 1, 0, 0.5 + 1e-9, 20, 0, 39, 19]], columns=ACT_COLUMNS)
    assert np.float32(0.5) == np.float32(0.5 + 1e-9)
    assert act_frame_map(gt, det).per_class['a'] == 1.0 == ref_act_official(gt, det)[0]
    assert act_frame_map(gt, det.iloc[::-1]).per_class['a'] == pytest.approx(0.25) == ref_act_official(gt, det.iloc[::-1])[0]

@pytest.mark.parametrize('seed', range(4))
def test_act_float32_near_ties_and_duplicates_match_official(seed):
    # many tied and float32-merged scores, exact duplicate detections and duplicate GT tubes, > 16 rows per class
    # (numpy's argsort is then no longer stable: only the same call on the same float32 array gives the order)
    rng = np.random.default_rng(100 + seed)
    gt = _rand_act_gt(rng, n_videos=8, n_labels=3)
    v0 = gt['test_videos'][0][0]; c0 = next(iter(gt['gttubes'][v0]))
    gt['gttubes'][v0][c0].append(gt['gttubes'][v0][c0][0].copy())          # a duplicated GT tube
    vids = list(gt['nframes']); rows = []
    for _ in range(1500):
        v = vids[int(rng.integers(len(vids)))]; f = int(rng.integers(1, gt['nframes'][v] + 1))
        tubes = [t for ts in gt['gttubes'][v].values() for t in ts]
        b = tubes[int(rng.integers(len(tubes)))][f - 1, 1:5] + np.round(rng.normal(0, 4, 4), 1)
        b[2:] = np.maximum(b[2:], b[:2])
        s = round(float(rng.uniform()), 2) + float(rng.integers(-3, 4)) * 1e-9    # float32 merges the 1e-9 steps
        rows.append([v, f, int(rng.integers(3)), s, *b.tolist()])
        if rng.uniform() < 0.25: rows.append(list(rows[-1]))                     # exact duplicate
    det = pd.DataFrame(rows, columns=ACT_COLUMNS)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = act_frame_map(gt, det)
    ref = ref_act_official(gt, det)
    assert [res.per_class[n] for n in gt['labels']] == [float(a) for a in ref]      # bit for bit (float32 AP)
    assert res.map == pytest.approx(float(np.mean(ref)), abs=1e-7)
