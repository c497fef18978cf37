"The two OV benchmarks, the OV-AVA split file, region-text pairs (HC-STVG splitter, VidSTG), and `ovstad data region-text`."
import json, os, pickle, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from ovstad.core import OvstadError, ClassList
from ovstad.data import collate_detection, ClipTransform, read_act_gt
from ovstad.benchmarks import (UCFJHMDB, OVAVA, make_prompts, action_phrase, read_ov_ava_split, check_ov_ava_split,
                               default_ov_ava_split_path, split_actions, split_tube, build_region_text_pairs,
                               RegionTextDataset, _write_toy_video, ava_action_type)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent/'shared'/'data'
BIN = Path(sys.executable).parent
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real data samples not present at {SHARED}")

try:
    import ovstad.eval  # noqa: F401
    HAS_EVAL = True
except ImportError:
    HAS_EVAL = False


# ---------------------------------------------------------------- HC-STVG splitter (issue: three sentences, in order, no gaps/overlap)
HC_RECORD = {'clip1.mp4': {'img_num': 40, 'img_size': [48, 64], 'st_frame': 6, 'ed_frame': 25, 'st_time': 1.0, 'ed_time': 5.0,
                           'bbox': [[10 + k, 5, 20, 30] for k in range(20)],
                           'English': 'The woman in the red coat walks to the table. She picks up a cup, then drinks from it.'}}


def test_hcstvg_splitter_three_sentences_in_order(tmp_path):
    (tmp_path/'hc').mkdir(); (tmp_path/'hc/train.json').write_text(json.dumps(HC_RECORD))
    st = build_region_text_pairs(hcstvg=tmp_path/'hc', out=tmp_path/'out', sources='hcstvg')
    z = np.load(tmp_path/'out/pairs.npz')
    sents = [str(z['sentences'][i]) for i in z['sentence_id']]
    expected = ['The woman in the red coat walks to the table.', 'The woman in the red coat picks up a cup.',
                'The woman in the red coat drinks from it.']
    # chronological: the k-th sentence goes with the k-th sub-tube
    order = [s for k, s in enumerate(sents) if k == 0 or s != sents[k - 1]]
    assert order == expected
    frames = z['frame']
    assert frames.tolist() == list(range(5, 25))  # every box of the tube, 0-based, exactly once
    runs = {s: frames[[t == s for t in sents]] for s in expected}
    # sub-tubes are contiguous, cover the tube without gaps or overlap, and are ordered in time
    spans = [(r.min(), r.max()) for r in runs.values()]
    assert all((r == np.arange(r.min(), r.max() + 1)).all() for r in runs.values())
    assert spans[0][0] == 5 and spans[-1][1] == 24
    assert all(spans[k][1] + 1 == spans[k + 1][0] for k in range(2))
    assert sorted(len(r) for r in runs.values()) == [6, 7, 7]
    # boxes follow their frames (x1 = 10 + k)
    assert np.allclose(z['x1'], 10 + np.arange(20))
    assert st['sources']['hcstvg'] == {'box_text_pairs': 20, 'unique_sentences': 3, 'avg_boxes_per_sentence': 6.67}


@pytest.mark.parametrize('n,k', [(1, 1), (5, 5), (7, 3), (100, 7), (64, 9)])
def test_split_tube_partition(n, k):
    parts = split_tube(n, k)
    assert len(parts) == k and parts[0][0] == 0 and parts[-1][1] == n
    assert all(a < b for a, b in parts) and all(parts[i][1] == parts[i + 1][0] for i in range(k - 1))
    assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


@pytest.mark.parametrize('text,expected', [
    ('A man walks in. He sits down.', ['A man walks in.', 'A man sits down.']),
    ('The boy in blue jeans runs and jumps over the fence.', ['The boy in blue jeans runs.', 'The boy in blue jeans jumps over the fence.']),
    ('The old man turns around and then leaves the room.', ['The old man turns around.', 'The old man leaves the room.']),
    ('The girl holds the cat and the dog.', ['The girl holds the cat and the dog.']),
])
def test_split_actions_rules(text, expected):
    assert split_actions(text) == expected


def test_too_short_tube_is_skipped_and_counted(tmp_path):
    rec = {'a.mp4': {**HC_RECORD['clip1.mp4'], 'bbox': [[1, 1, 2, 2]] * 2}}
    rec['b.mp4'] = HC_RECORD['clip1.mp4']
    (tmp_path/'t.json').write_text(json.dumps(rec))
    st = build_region_text_pairs(hcstvg=tmp_path/'t.json', sources=['hcstvg'])
    assert st['notes']['hcstvg']['tubes_skipped_too_short'] == 1 and st['sources']['all']['box_text_pairs'] == 20


# ---------------------------------------------------------------- VidSTG pairs
def _vidstg_world(root):
    d = root/'vidor/annotation/0001'; d.mkdir(parents=True)
    traj = [[{'tid': 0, 'bbox': {'xmin': f, 'ymin': 0, 'xmax': f + 10, 'ymax': 20}},
             {'tid': 1, 'bbox': {'xmin': 0, 'ymin': 0, 'xmax': 5, 'ymax': 5}}] for f in range(30)]
    (d/'v9.json').write_text(json.dumps({'video_id': 'v9', 'frame_count': 30, 'fps': 30, 'width': 64, 'height': 48,
                                         'subject/objects': [{'tid': 0, 'category': 'adult'}, {'tid': 1, 'category': 'dog'}],
                                         'trajectories': traj}))
    recs = [{'vid': 'v9', 'frame_count': 30, 'fps': 30, 'width': 64, 'height': 48, 'used_segment': {'begin_fid': 0, 'end_fid': 29},
             'temporal_gt': {'begin_fid': 10, 'end_fid': 30}, 'subject/objects': [{'tid': 0, 'category': 'adult'}, {'tid': 1, 'category': 'dog'}],
             'captions': [{'description': 'an adult in black opens the door.', 'type': 'person', 'target_id': 0}], 'questions': []},
            {'vid': 'v9', 'frame_count': 30, 'fps': 30, 'width': 64, 'height': 48, 'used_segment': {'begin_fid': 0, 'end_fid': 29},
             'temporal_gt': {'begin_fid': 0, 'end_fid': 5}, 'subject/objects': [{'tid': 0, 'category': 'adult'}, {'tid': 1, 'category': 'dog'}],
             'captions': [{'description': 'the dog lies on the floor.', 'type': 'object', 'target_id': 1}], 'questions': []}]
    (root/'train_annotations.json').write_text(json.dumps(recs))


def test_vidstg_pairs_person_targets_within_temporal_gt(tmp_path):
    _vidstg_world(tmp_path/'vidstg')
    st = build_region_text_pairs(vidstg=tmp_path/'vidstg', out=tmp_path/'o', sources='vidstg')
    z = np.load(tmp_path/'o/pairs.npz')
    assert z['frame'].tolist() == list(range(10, 30))  # end_fid exclusive
    assert set(z['sentences'].tolist()) == {'an adult in black opens the door.'}  # the dog caption is not a person target
    assert np.allclose(z['x1'], np.arange(10, 30))
    assert st['sources']['vidstg']['box_text_pairs'] == 20


@needs_shared
def test_vidstg_real_val_without_vidor_says_where_boxes_are(tmp_path):
    with pytest.raises(OvstadError, match='VidOR annotation files'):
        build_region_text_pairs(vidstg=SHARED/'vidstg/val_annotations.json', sources='vidstg')


def test_fraction_keeps_whole_sentences(tmp_path):
    recs = {f'c{i}.mp4': {'img_num': 50, 'st_frame': 1, 'bbox': [[0, 0, 5, 5]] * 10, 'English': f'Person {i} waves.'} for i in range(20)}
    (tmp_path/'h.json').write_text(json.dumps(recs))
    full = build_region_text_pairs(hcstvg=tmp_path/'h.json', sources='hcstvg')
    q = build_region_text_pairs(hcstvg=tmp_path/'h.json', sources='hcstvg', fraction=0.25, out=tmp_path/'q', seed=3)
    assert full['sources']['all']['box_text_pairs'] == 200
    assert q['sources']['all'] == {'box_text_pairs': 50, 'unique_sentences': 5, 'avg_boxes_per_sentence': 10.0}
    q2 = build_region_text_pairs(hcstvg=tmp_path/'h.json', sources='hcstvg', fraction=0.25, seed=3)
    assert q2 == {**q, 'roots': q['roots']}


def test_region_text_cli_and_dataset(tmp_path):
    (tmp_path/'hc').mkdir(); (tmp_path/'hc/train.json').write_text(json.dumps(HC_RECORD))
    _write_toy_video(tmp_path/'hc/videos/clip1.mp4', n=40)
    _vidstg_world(tmp_path/'vidstg')
    _write_toy_video(tmp_path/'vidstg/videos/0001/v9.mp4', n=30)
    r = subprocess.run([str(BIN/'ovstad'), 'data', 'region-text', '--hcstvg', str(tmp_path/'hc'), '--vidstg', str(tmp_path/'vidstg'),
                        '--out', str(tmp_path/'pairs')], capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'}, timeout=300)
    assert r.returncode == 0, r.stderr
    st = json.loads((tmp_path/'pairs/stats.json').read_text())
    assert st['sources']['all']['box_text_pairs'] == 40 and st['sources']['all']['unique_sentences'] == 4
    assert '| all | 40 | 4 | 10.00 |' in (tmp_path/'pairs/stats.md').read_text()
    ds = RegionTextDataset(tmp_path/'pairs', num_frames=4, transform=ClipTransform(32))
    assert len(ds) == 40
    items = [ds[0], ds[len(ds) - 1]]
    assert {it['meta']['source'] for it in items} == {'hcstvg', 'vidstg'}
    b = collate_detection(items)
    assert b['video'].shape[:3] == (2, 4, 3) and b['rois'].shape == (2, 5) and len(b['sentences']) == 2
    assert b['sentence_ids'].dtype.is_floating_point is False
    h = subprocess.run([str(BIN/'ovstad'), 'data', 'region-text', '--help'], capture_output=True, text=True)
    assert 'examples:' in h.stdout and '--fraction' in h.stdout


# ---------------------------------------------------------------- OV-AVA split
def test_default_ov_ava_split_principles():
    df = read_ov_ava_split()
    assert len(df) == 60 and default_ov_ava_split_path().read_text().startswith('# OV-AVA')
    assert check_ov_ava_split(df) == {'object': {'base': 24, 'novel': 8}, 'person': {'base': 11, 'novel': 4},
                                      'pose': {'base': 10, 'novel': 3}, 'all': {'base': 45, 'novel': 15}}
    assert all(ava_action_type(i) == t for i, t in zip(df.id, df.type))


@needs_shared
def test_default_split_matches_official_label_map():
    lm = ClassList.from_pbtxt(SHARED/'ava-sample/ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt')
    df = read_ov_ava_split()
    assert set(df.id) == set(lm.ids) and all(lm.name_of(i) == n for i, n in zip(df.id, df.name))
    assert len(set(make_prompts(lm))) == 60


# ---------------------------------------------------------------- benchmark objects on toy worlds
def _toy_act(root, labels, videos, n=12, split_name='UCF101v2-GT.pkl'):
    gt = {'labels': labels, 'nframes': {}, 'resolution': {}, 'gttubes': {}, 'train_videos': [videos[:1]], 'test_videos': [videos[1:]]}
    props = {}
    for k, v in enumerate(videos):
        _write_toy_video(root/'videos'/f'{v}.mp4', n)
        gt['nframes'][v], gt['resolution'][v] = n, (48, 64)
        gt['gttubes'][v] = {k % len(labels): [np.array([[f, 20, 10, 40, 40] for f in range(1, n + 1)], np.float32)]}
        for f in range(1, n + 1): props[(v, f)] = np.array([[20, 10, 40, 40, 0.9], [0, 0, 9, 9, 0.2]], np.float32)
    root.mkdir(parents=True, exist_ok=True)
    pickle.dump(gt, open(root/split_name, 'wb'))
    pickle.dump({f"{v},{f:05d}": a for (v, f), a in props.items()}, open(root/'proposals.pkl', 'wb'))


@pytest.fixture
def toy_ucfjhmdb(tmp_path):
    _toy_act(tmp_path/'ucf101-24', ['Basketball', 'BasketballDunk'], ['Basketball/v_1', 'BasketballDunk/v_2', 'Basketball/v_3'])
    _toy_act(tmp_path/'jhmdb', ['brush_hair', 'catch'], ['brush_hair/a', 'catch/b', 'brush_hair/c'], split_name='JHMDB-GT.pkl')
    return UCFJHMDB(tmp_path)


def test_ucfjhmdb_classes_prompts_datasets(toy_ucfjhmdb):
    bm = toy_ucfjhmdb
    assert bm.prompts(bm.base_classes) == ['a person basketball', 'a person basketball dunk']
    assert bm.all_classes.ids == (0, 1, 2, 3) and bm.novel_classes.names == ('brush_hair', 'catch')
    tr = bm.train_dataset(num_frames=4, keyframe_step=3, short_side=32, crop_size=32)
    assert len(tr) == 4 and tr[0]['video'].shape == (4, 3, 32, 32) and tr[0]['labels'].shape == (1, 2)
    ev = bm.eval_datasets(num_frames=4, keyframe_step=1, short_side=32)
    assert len(ev['base']) == 24 and len(ev['novel']) == 24
    b = collate_detection([ev['novel'][0], ev['novel'][5]])
    assert b['rois'].shape == (2, 5) and 'labels' not in b and b['meta'][1]['frame'] == 6


@pytest.mark.skipif(not HAS_EVAL, reason='ovstad.eval not available')
def test_ucfjhmdb_evaluate_perfect_and_keyframe_step(toy_ucfjhmdb):
    import pandas as pd
    bm = toy_ucfjhmdb
    rows = []
    for off, gt in ((0, bm.ucf_gt), (2, bm.jhmdb_gt)):
        for v in gt['test_videos'][0]:
            for lab, tubes in gt['gttubes'][v].items():
                for t in tubes:
                    for r in t: rows.append((v, int(r[0]), lab + off, 0.9, *r[1:5]))
    det = pd.DataFrame(rows, columns=['video', 'frame', 'label', 'score', 'x1', 'y1', 'x2', 'y2'])
    res = bm.evaluate(det)
    assert res['base'].map == pytest.approx(1.0) and res['novel'].map == pytest.approx(1.0) and res['all'].map == pytest.approx(1.0)
    # detections on every 3rd frame only: with keyframe_step=3 the GT of other frames is not counted
    sub = det[(det.frame - 1) % 3 == 0]
    assert bm.evaluate(sub, keyframe_step=3)['base'].map == pytest.approx(1.0)
    assert bm.evaluate(sub, keyframe_step=1)['base'].map < 0.5


@needs_shared
def test_ucfjhmdb_from_real_annotations():
    bm = UCFJHMDB(ucf_root=SHARED/'ucf101-24', jhmdb_root=SHARED/'jhmdb')
    assert len(bm.base_classes) == 24 and len(bm.novel_classes) == 21 and len(bm.all_classes) == 45
    p = bm.prompts()
    assert p[1] == 'a person basketball dunk' and p[23] == 'a person walking with dog' and p[24] == 'a person brush hair'
    assert len(bm.jhmdb_gt['test_videos'][0]) == 268


def _toy_ava(root):
    root.mkdir(parents=True, exist_ok=True)
    _write_toy_video(root/'videos/vidA.mp4', n=40)
    (root/'ava_action_list.pbtxt').write_text(''.join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in
                                                      [(1, 'bend/bow (at the waist)'), (12, 'stand'), (17, 'carry/hold (an object)'), (80, 'watch (a person)')]))
    (root/'ov_ava_split.csv').write_text('id,name,type,split\n1,bend/bow (at the waist),pose,base\n12,stand,pose,novel\n'
                                         '17,carry/hold (an object),object,base\n80,watch (a person),person,base\n')
    rows = ['vidA,0001,0.3,0.2,0.6,0.8,1,0', 'vidA,0001,0.3,0.2,0.6,0.8,12,0', 'vidA,0002,0.3,0.2,0.6,0.8,12,0', 'vidA,0002,0.3,0.2,0.6,0.8,17,0']
    (root/'ava_train_v2.2.csv').write_text('\n'.join(rows) + '\n'); (root/'ava_val_v2.2.csv').write_text('\n'.join(rows) + '\n')
    (root/'ava_excluded_timestamps.csv').write_text('')
    pickle.dump({'vidA,0001': np.array([[0.3, 0.2, 0.6, 0.8, 0.95]]), 'vidA,0002': np.array([[0.3, 0.2, 0.6, 0.8, 0.5]])},
                open(root/'ava_proposals_val.pkl', 'wb'))


def test_ovava_toy(tmp_path):
    _toy_ava(tmp_path/'ava')
    bm = OVAVA(tmp_path/'ava')
    assert bm.base_classes.ids == (1, 17, 80) and bm.novel_classes.ids == (12,)
    tr = bm.train_dataset(num_frames=4, short_side=32)
    assert len(tr) == 2 and [tr[i]['labels'].tolist() for i in range(2)] == [[[1, 0, 0]], [[0, 1, 0]]]
    it = tr[0]
    assert it['meta']['timestamp'] == 1 and it['meta']['center'] == 25  # 1 s at 25 fps
    ev = bm.eval_datasets(num_frames=4, short_side=32)['val']
    assert len(ev) == 1 and float(ev[0]['box_scores'][0]) == pytest.approx(0.95)
    (tmp_path/'ava/ov_ava_split.csv').write_text('id,name,type,split\n1,a,pose,base\n')
    with pytest.raises(OvstadError, match='disagree'):
        OVAVA(tmp_path/'ava')


@pytest.mark.skipif(not HAS_EVAL, reason='ovstad.eval not available')
def test_ovava_evaluate_perfect(tmp_path):
    import pandas as pd
    _toy_ava(tmp_path/'ava')
    bm = OVAVA(tmp_path/'ava')
    gt = pd.read_csv(bm.val_csv, header=None)
    det = gt.iloc[:, :7].copy(); det[7] = 0.9
    res = bm.evaluate(det.set_axis(['video_id', 'timestamp', 'x1', 'y1', 'x2', 'y2', 'action_id', 'score'], axis=1))
    assert res['base'].map == pytest.approx(1.0) and res['novel'].map == pytest.approx(1.0) and res['all'].map == pytest.approx(1.0)
