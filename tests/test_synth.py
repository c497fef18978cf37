"""The generated mini world: every file reads back with the real readers, boxes lie on the rendered people,
builds are deterministic, and no novel label is a detection label in any training file."""
import csv, json, os, pickle, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
from ovstad import synth
from ovstad.core import stable_hash
from ovstad.data import read_captions, read_video

ROOT = Path(__file__).resolve().parents[1]
OVSTAD = [str(ROOT/'.venv'/'bin'/'ovstad')] if (ROOT/'.venv'/'bin'/'ovstad').exists() else [sys.executable, '-m', 'ovstad.cli']


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp('w')/'smoke'
    t = time.time()
    r = subprocess.run([*OVSTAD, 'mini', 'build', '--profile', 'smoke', '--out', str(out), '--quiet'],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    dt = time.time() - t
    assert dt < 60, f'smoke build took {dt:.1f} s'  # < 20 s on an idle 2-core machine; generous under shared load
    return out


def _all_files(root):
    return sorted(p for p in root.rglob('*') if p.is_file())


def test_layout_and_card(world):
    card = json.loads((world/'world.json').read_text())
    assert card['profile'] == 'smoke' and card['params_hash'] == stable_hash(synth.world_params('smoke', 0))
    for p in ['README.md', 'contact_sheet.png', 'pretrain/captions.json', 'ucf101-24/UCF101v2-GT.pkl', 'ucf101-24/proposals.pkl',
              'jhmdb/JHMDB-GT.pkl', 'jhmdb/proposals.pkl', 'ava/ava_train_v2.2.csv', 'ava/ava_val_v2.2.csv',
              'ava/ava_action_list.pbtxt', 'ava/ava_excluded_timestamps.csv', 'ava/ava_proposals_val.pkl', 'ava/ov_ava_split.csv',
              'hcstvg/train.json', 'hcstvg/val.json', 'vidstg/train_annotations.json', 'vidstg/val_annotations.json']:
        assert (world/p).is_file(), p
    readme = (world/'README.md').read_text()
    assert 'WaveLeftArm' in readme and 'wave_right_arm' in readme and 'punch another person' in readme
    assert len(synth.ACTIONS) >= 30


def test_every_file_reads_back(world):
    "Each file the builder writes is read by ovstad.data / ovstad.benchmarks readers; none is left unchecked."
    data = pytest.importorskip('ovstad.data', reason='ovstad.data readers not available')
    from ovstad.benchmarks import read_ov_ava_split
    from ovstad.core import ClassList
    checked = set()
    def ok(p): checked.add(p)
    for p in _all_files(world):
        rel = p.relative_to(world).as_posix()
        if p.suffix == '.mp4':
            continue  # videos: checked below through ClipReader
        if rel.endswith('-GT.pkl'):
            gt = data.read_act_gt(p); assert len(gt['gttubes']) == len(gt['nframes']); ok(p)
        elif rel.endswith('proposals.pkl'):
            d = data.read_frame_proposals(p, 0.3); assert len(d) > 0; ok(p)
        elif rel.endswith('ava_proposals_val.pkl'):
            d = data.read_ava_proposals(p, 0.8); assert len(d) > 0; ok(p)
        elif rel.endswith('_v2.2.csv'):
            df = data.read_ava_csv(p, 'gt'); assert len(df) > 0; ok(p)
        elif rel.endswith('excluded_timestamps.csv'):
            data.read_ava_exclusions(p); ok(p)
        elif rel.endswith('.pbtxt'):
            assert len(ClassList.from_pbtxt(p)) == 24; ok(p)
        elif rel.endswith('ov_ava_split.csv'):
            assert len(read_ov_ava_split(p)) == 24; ok(p)
        elif rel.startswith('hcstvg/') and p.suffix == '.json':
            assert len(data.read_hcstvg(p)) > 0; ok(p)
        elif rel.startswith('vidstg/vidor/annotation/'):
            t = data.read_vidor_trajectories(p); assert t['tubes']; ok(p)
        elif rel.startswith('vidstg/') and rel.endswith('_annotations.json'):
            recs = data.read_vidstg(p); assert len(recs) > 0; ok(p)
            # temporal_gt end_fid is exclusive (as in VidSTG, where it may equal frame_count); used_segment's is inclusive
            assert all(0 <= r.temporal_gt[0] < r.temporal_gt[1] <= r.frame_count for r in recs)
            assert all(r.used_segment == (0, r.frame_count - 1) for r in recs)
        elif rel == 'pretrain/captions.json':
            caps = read_captions(p)
            assert len(caps) == synth.PROFILES['smoke']['pretrain']
            assert all((world/'pretrain'/'videos'/v).exists() for v, _ in caps); ok(p)
        elif rel == 'contact_sheet.png':
            import cv2; assert cv2.imread(str(p)).shape[0] > 100; ok(p)
        elif rel == 'build.json':
            assert json.loads(p.read_text())['build_seconds'] > 0; ok(p)
        elif rel in ('README.md', 'world.json', '.build.lock'):   # the lock: empty, held by `ovstad mini build` while it writes
            ok(p)
    unchecked = [p for p in _all_files(world) if p.suffix != '.mp4' and p not in checked]
    assert not unchecked, unchecked
    # every video: ClipReader opens it and reads the right number of frames and size
    for sub in ('pretrain', 'ucf101-24', 'jhmdb', 'ava', 'hcstvg', 'vidstg'):
        cr = data.ClipReader(world/sub)
        vids = sorted((world/sub/'videos').rglob('*.mp4'))
        assert vids
        for v in vids[::7]:
            name = v.relative_to(world/sub/'videos').with_suffix('').as_posix()
            info = cr.info(name)
            assert info['frames'] == synth.NFRAMES[{'ucf101-24': 'ucf'}.get(sub, sub)], (v, info)
            clip = cr.read(name, 4, num_frames=8, stride=1)
            assert clip.shape[-3:] == (112, 112, 3)


def test_inspect_cli_reads_annotations(world):
    pytest.importorskip('ovstad.data', reason='ovstad.data readers not available')
    from ovstad.cli import main
    for rel in ['ucf101-24/UCF101v2-GT.pkl', 'jhmdb/JHMDB-GT.pkl', 'jhmdb/proposals.pkl', 'ava/ava_train_v2.2.csv',
                'ava/ava_action_list.pbtxt', 'ava/ava_excluded_timestamps.csv', 'ava/ava_proposals_val.pkl',
                'hcstvg/train.json', 'vidstg/val_annotations.json', 'ava/videos/val0000.mp4']:
        assert main(['data', 'inspect', str(world/rel), '--json']) == 0, rel


def test_benchmarks_load_the_world(world):
    bm = pytest.importorskip('ovstad.benchmarks', reason='ovstad.benchmarks not available')
    b = bm.UCFJHMDB(world)
    assert len(b.base_classes) == len(synth.UCF_BASE) and len(b.novel_classes) == len(synth.JHMDB_NOVEL)
    item = b.train_dataset(short_side=112)[0]
    assert item['video'].shape[0] == 8 and len(item['boxes']) >= 1
    a = bm.OVAVA(world/'ava')
    assert len(a.base_classes) == 18 and len(a.novel_classes) == 6
    assert len(a.eval_datasets(short_side=112)['val']) > 0


def _file_boxes(world, job):
    "Boxes of the job's clip as its annotation file states them: {pid_or_0: {frame0: (x1, y1, x2, y2)}}."
    c, v = job['corpus'], job['name']
    if c in ('ucf', 'jhmdb'):
        gt = pickle.load(open(world/('ucf101-24/UCF101v2-GT.pkl' if c == 'ucf' else 'jhmdb/JHMDB-GT.pkl'), 'rb'))
        (tube,) = [t for tl in gt['gttubes'][v].values() for t in tl]
        return {0: {int(r[0]) - 1: r[1:] for r in tube}}
    if c == 'hcstvg':
        d = json.loads((world/'hcstvg'/f"{job['split']}.json").read_text())[f'{v}.mp4']
        return {0: {d['st_frame'] - 1 + i: (x, y, x + w, y + h) for i, (x, y, w, h) in enumerate(d['bbox'])}}
    if c == 'ava':
        out = {}
        for row in csv.reader(open(world/'ava'/f"ava_{job['split']}_v2.2.csv")):
            if row[0] == v:
                f = int(round(int(row[1]) * synth.FPS['ava']))
                out.setdefault(int(row[7]), {})[f] = np.array([float(x) for x in row[2:6]]) * job['size']
        return out
    if c == 'vidstg':
        d = json.loads((world/'vidstg'/'vidor'/'annotation'/f'{v}.json').read_text())
        persons = {o['tid'] for o in d['subject/objects'] if o['category'] in ('adult', 'child')}
        out = {}
        for f, boxes in enumerate(d['trajectories']):
            for b in boxes:
                if b['tid'] in persons:
                    bb = b['bbox']; out.setdefault(b['tid'], {})[f] = (bb['xmin'], bb['ymin'], bb['xmax'], bb['ymax'])
        return out
    return {}


@pytest.mark.parametrize('corpus', ['ucf', 'jhmdb', 'ava', 'hcstvg', 'vidstg'])
def test_boxes_lie_on_the_rendered_person(world, corpus):
    "Re-render clips with per-person masks: the person's pixels fall inside the box the annotation file gives, and the box is tight."
    params = synth.world_params('smoke', 0)
    jobs = [j for j in synth.world_jobs(params) if j['corpus'] == corpus][:6]
    n = 0
    for job in jobs:
        _, scene, plan = synth.plan_item(job)
        _, _, masks = synth.render_clip(scene, plan['persons'], plan['T'], masks=True)
        for pid, frames in _file_boxes(world, job).items():
            for f, b in frames.items():
                ys, xs = np.nonzero(masks[pid][f])
                if not len(xs): continue
                x1, y1, x2, y2 = b
                inside = ((xs >= x1 - 1.5) & (xs <= x2 + 1.5) & (ys >= y1 - 1.5) & (ys <= y2 + 1.5)).mean()
                assert inside > 0.995, (job['name'], pid, f, inside)
                mb = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                iw = max(0, min(x2, mb[2]) - max(x1, mb[0])); ih = max(0, min(y2, mb[3]) - max(y1, mb[1]))
                iou = iw * ih / ((x2 - x1) * (y2 - y1) + (mb[2] - mb[0]) * (mb[3] - mb[1]) - iw * ih)
                assert iou > 0.7, (job['name'], pid, f, iou, b, mb)
                n += 1
    assert n > 10


def test_no_novel_label_in_training_files(world):
    novel_names = set(synth.JHMDB_NOVEL) | {n for n, _, s in synth.AVA_CLASSES if s == 'novel'}
    ucf = pickle.load(open(world/'ucf101-24/UCF101v2-GT.pkl', 'rb'))
    clean = lambda s: ''.join(' ' + c.lower() if c.isupper() else c for c in s).strip().replace('_', ' ')
    assert not {clean(l) for l in ucf['labels']} & set(synth.JHMDB_NOVEL)
    assert ucf['train_videos'][0] and ucf['labels'] == [synth.camel(n) for n in synth.UCF_BASE]
    jh = pickle.load(open(world/'jhmdb/JHMDB-GT.pkl', 'rb'))
    assert jh['train_videos'] == [[]]  # the novel-class dataset has no training videos
    split = {int(r['id']): r for r in csv.DictReader(open(world/'ava/ov_ava_split.csv'))}
    train_ids = {int(r[6]) for r in csv.reader(open(world/'ava/ava_train_v2.2.csv'))}
    assert train_ids and all(split[i]['split'] == 'base' for i in train_ids)
    val_ids = {int(r[6]) for r in csv.reader(open(world/'ava/ava_val_v2.2.csv'))}
    assert any(split[i]['split'] == 'novel' for i in val_ids)
    assert not {split[i]["name"] for i in train_ids} & novel_names
    assert not set(synth.UCF_BASE) & novel_names  # no novel class of either benchmark trains the other
    # novel names are made of words the other corpora use in other combinations
    words = set()
    for f in ['hcstvg/train.json']:
        for r in json.loads((world/f).read_text()).values(): words |= set(r['English'].lower().replace(',', ' ').replace('.', ' ').split())
    words |= {w for n in synth.UCF_BASE for w in n.split()} | {w for n, _, sp in synth.AVA_CLASSES if sp == 'base' for w in n.split()}
    assert all(set(n.split()) <= words for n in novel_names), [n for n in novel_names if not set(n.split()) <= words]


TINY = dict(pretrain=6, ucf_train=1, ucf_test=1, jhmdb=1, ava_train=3, ava_val=3, hcstvg_train=3, hcstvg_val=2,
            vidstg_train=3, vidstg_val=2)


def test_determinism(tmp_path):
    "Same seed: identical annotation files and decoded frames (even in another process with other imports). Another seed: different."
    a = tmp_path/'a'
    r = subprocess.run([sys.executable, '-c', f'from ovstad import synth; synth.build_world({str(a)!r}, "smoke", 0, progress=False, **{TINY!r})'],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    import timm  # noqa: F401  (the encoder once gave other bitstreams depending on what the process had imported)
    b = synth.build_world(tmp_path/'b', 'smoke', seed=0, progress=False, **TINY)
    files = _all_files(a)
    assert {p.relative_to(a) for p in files} == {p.relative_to(b) for p in _all_files(b)}
    for p in files:
        rel = p.relative_to(a)
        if p.suffix in ('.json', '.pkl', '.csv', '.pbtxt', '.md') and rel.name != 'build.json':  # world.json too: byte-identical
            assert p.read_bytes() == (b/rel).read_bytes(), rel
        if p.suffix == '.mp4':
            assert np.array_equal(read_video(p), read_video(b/rel)), rel
    assert 'build_seconds' not in json.loads((a/'world.json').read_text())
    assert json.loads((a/'build.json').read_text())['build_seconds'] >= 0
    c = synth.build_world(tmp_path/'c', 'smoke', seed=1, progress=False, **TINY)
    assert (c/'hcstvg/train.json').read_text() != (a/'hcstvg/train.json').read_text()
    assert not np.array_equal(read_video(c/'pretrain/videos/pt_00000.mp4'), read_video(a/'pretrain/videos/pt_00000.mp4'))


def test_ensure_world_returns_at_once_when_current(world):
    t = time.time()
    assert synth.ensure_world('smoke', out=world, seed=0, progress=False) == world
    assert time.time() - t < 2
    assert not synth.world_is_current(world, synth.world_params('smoke', 3))
    assert not synth.world_is_current(world/'nowhere', synth.world_params('smoke', 0))


def test_proposals_behave_like_a_detector(world):
    props = pickle.load(open(world/'ucf101-24/proposals.pkl', 'rb'))
    gt = pickle.load(open(world/'ucf101-24/UCF101v2-GT.pkl', 'rb'))
    hit = tot = fp_hi = n_hi = 0
    for v, tubes in gt['gttubes'].items():
        for tl in tubes.values():
            for r in tl[0]:
                p = props[f'{v},{int(r[0]):05d}']; p = p[p[:, 4] >= 0.3]
                x1 = np.maximum(p[:, 0], r[1]); y1 = np.maximum(p[:, 1], r[2]); x2 = np.minimum(p[:, 2], r[3]); y2 = np.minimum(p[:, 3], r[4])
                inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
                iou = inter / ((p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) + (r[3] - r[1]) * (r[4] - r[2]) - inter)
                tot += 1; hit += bool((iou >= 0.5).any())
    allp = np.concatenate(list(props.values()))
    assert 0.85 < hit / tot < 1.0, hit / tot          # most true people found, a few missed
    assert (allp[:, 4] < 0.3).mean() > 0.05           # and low-confidence false positives exist


def test_cli_help_and_errors(capsys):
    from ovstad.cli import main
    with pytest.raises(SystemExit) as e: main(['mini', 'build', '--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0 and 'ovstad mini build --profile smoke --out data/smoke' in out and '--seed' in out
    with pytest.raises(SystemExit) as e: main(['mini', 'build', '--profile', 'huge', '--out', 'x'])
    assert e.value.code == 2 and 'invalid choice' in capsys.readouterr().err
    assert main(['mini', 'build', '--profile', 'smoke', '--out', 'x', '--seed', '-3']) == 2
    assert '--seed must be >= 0' in capsys.readouterr().err
    with pytest.raises(synth.OvstadError, match='unknown world size keys'):
        synth.world_params('smoke', 0, clips=3)


def test_concurrent_ensure_world_builds_once(tmp_path, monkeypatch):
    # two callers ask for the same missing world at once: one builds, the other waits on the lock and reuses it
    import threading
    calls = []
    def fake_build(out, profile, seed, progress=True):
        calls.append(threading.get_ident()); time.sleep(0.5)
        p = synth.world_params(profile, seed)
        (Path(out)/'world.json').write_text(json.dumps({**p, 'params_hash': synth.stable_hash(p)}))
        return Path(out)
    monkeypatch.setattr(synth, 'build_world', fake_build)
    outs = []
    ts = [threading.Thread(target=lambda: outs.append(synth.ensure_world('smoke', tmp_path/'w', progress=False))) for _ in range(2)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert len(calls) == 1 and outs == [tmp_path/'w'] * 2


# every word a caption may use for an action's verb (paraphrases, loose gerunds, the label's own words)
_VERB_WORDS = {'raise': ('raise', 'lifts', 'puts up', 'arm up'), 'wave': ('wave', 'waving'), 'swing': ('swing', 'moving arms'),
               'punch': ('punch', 'jabs', 'boxing'), 'circle': ('circle', 'rotates'), 'kick': ('kick',),
               'jump': ('jump', 'hops'), 'squat': ('squat', 'crouches', 'exercising'), 'bow': ('bow', 'bends forward'),
               'turn': ('turn', 'spins'), 'walk': ('walk', 'strolls', 'runs', 'jogs', 'run '), 'lean': ('lean', 'tilts', 'stretching'),
               'clap': ('clap',), 'nod': ('nod',), 'shake': ('shake', 'shaking'), 'stand': ('stand', 'waits')}

def _names_action(caption, action):
    return any(w in caption for w in _VERB_WORDS[synth.ACTIONS[action].verb])


def test_pretraining_captions_name_the_actions(world):
    """The mini ViCLIP learns the world's actions only from captions that say what the people do (world v6; v5's 45%
    left it at chance): nearly every caption of the smoke world's corpus names an action of its clip, and two-person
    clips mostly name both people's actions, each person told apart by the shirt colour."""
    from ovstad.data import read_captions
    card = json.loads((world/'world.json').read_text())
    caps = dict(read_captions(world/'pretrain'))
    named = both = two = 0
    for i in range(card['sizes']['pretrain']):
        _, _, plan = synth.plan_item(dict(corpus='pretrain', idx=i, seed=card['seed'], size=card['sizes']['size']))
        cap, acts = caps[f'pt_{i:05d}.mp4'], [p.segments[0][0]['action'] for p in plan['persons']]
        hits = [a for a in acts if _names_action(cap, a)]
        named += bool(hits)
        if len(acts) == 2:
            two += 1
            shirts = [p.body['shirt'] for p in plan['persons']]
            both += len(hits) == 2 and all(s in cap for s in shirts)
    n = card['sizes']['pretrain']
    assert named >= 0.85 * n, f"only {named} of {n} pretraining captions name an action of their clip"
    assert two >= 0.25 * n and both >= 0.6 * two, f"{both} of {two} two-person captions name both people and actions"


def test_time_scale_plays_the_actions_faster_in_video_frames():
    """World v7: clips play their actions at `TIME_SCALE[corpus]` action frames per video frame (segment bounds stay in
    video frames), so frame t of a clip at time scale 3 is frame 3t of the same action played at 1; every corpus's sampled
    frames (stride 1, or 8 for the AVA analog) advance the actions by 3."""
    rng = np.random.default_rng(3); scene = synth.random_scene(rng, 64, occluder_p=0.0)
    scene['drift'] = (*scene['drift'][:2], 0.0, 0.0)   # a still camera: only the person moves
    p = synth.plan_ucf(rng, 64, 'wave right arm')['persons'][0]
    inst = p.segments[0][0]; T = 8
    fast, _ = synth.render_clip(dict(scene, time_scale=3.0), [synth.Person(p.body, p.ground_y, p.xpref, [(inst, 0, T)], 0)], T)
    slow, _ = synth.render_clip(dict(scene, time_scale=1.0), [synth.Person(p.body, p.ground_y, p.xpref, [(inst, 0, 3 * T)], 0)], 3 * T)
    assert np.array_equal(fast, slow[::3])
    assert not np.array_equal(fast[0], fast[1])
    strides = {'ava': 8}
    assert {c: synth.TIME_SCALE[c] * strides.get(c, 1) for c in synth.CORPORA} == {c: 3.0 for c in synth.CORPORA}
    for c in synth.CORPORA:
        job = dict(corpus=c, idx=0, seed=0, size=64, action='wave right arm')
        assert synth.plan_item(job)[1]['time_scale'] == synth.TIME_SCALE[c]
