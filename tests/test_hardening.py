"""Hardening: no code runs from a checkpoint, no run looks complete that is not, a clear error for a bad input.

Every case here failed before: a `__reduce__` payload ran through `model inspect` and `--resume`, steps=0 trained
nothing and finished, a truncated newest checkpoint ended `--resume` in a traceback, a damaged artefact was reused,
and the parser cases ended in tracebacks."""
import argparse, json, os, pickle, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ovstad.core import (CheckpointRefused, ClassList, OvstadError, ensure_writable, load_checkpoint, trust_checkpoints)
from ovstad.trainer import Run, TrainConfig, latest_checkpoint, override, resume_checkpoint, train_toy

BIN = Path(sys.executable).parent
SHARED = Path(__file__).resolve().parent.parent.parent/'shared'/'data'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}
ENV.pop('OVSTAD_TRUST_CHECKPOINTS', None)

class Payload:
    "Unpickling this creates the marker file: it must never happen without the user's opt-in."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))

def ovstad(*args, cwd=None, module=False):
    cmd = [sys.executable, '-m', 'ovstad'] if module else [str(BIN/'ovstad')]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)

class _R:
    def __init__(self, rc, out, err): self.returncode, self.stdout, self.stderr = rc, out, err

def cli(capsys, *args):
    "`ovstad ARGS` in this process (faster than a subprocess for commands that load no model)."
    from ovstad.cli import main
    capsys.readouterr(); rc = main([str(a) for a in args]); o = capsys.readouterr()
    return _R(rc, o.out, o.err)

def refused(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert err and err[-1].startswith('ovstad: error: ') and 'Traceback' not in r.stderr, r.stderr[-2000:]
    for w in words: assert w in r.stderr, (w, r.stderr[-2000:])

@pytest.fixture(scope='module')
def smoke_sd():
    from ovstad.models import ViCLIP
    torch.manual_seed(0)
    return ViCLIP.from_config('smoke').state_dict()

# ---- checkpoints never run code -------------------------------------------------------------------------------

def test_payload_never_runs_through_loaders(tmp_path, smoke_sd):
    from ovstad.models import ViCLIP
    marker = tmp_path/'MARKER'
    f = tmp_path/'payload.pth'; torch.save({'model': smoke_sd, 'hook': Payload(marker)}, f)
    legacy = tmp_path/'legacy.pth'; torch.save({'model': {}, 'hook': Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path/'plain.pkl'; plain.write_bytes(pickle.dumps({'hook': Payload(marker)}, protocol=4))
    for p in (f, legacy, plain):
        with pytest.raises(CheckpointRefused, match=r'posix\.system.*--trust-checkpoint .*OVSTAD_TRUST_CHECKPOINTS=1'):
            load_checkpoint(p)
    with pytest.raises(CheckpointRefused, match=str(f)): ViCLIP.from_checkpoint(f)
    refused(ovstad('model', 'inspect', f), str(f), 'posix.system', '--trust-checkpoint')
    refused(ovstad('model', 'inspect', f, module=True), 'posix.system')
    assert not marker.exists()

def test_payload_never_runs_through_resume(tmp_path):
    marker, run = tmp_path/'MARKER', tmp_path/'run'
    train_toy(run, steps=20, stop_after=10, ckpt_every=10)
    ck = run/'checkpoints'/'ckpt-00000020.pt'
    torch.save({'model': {}, 'optimizer': {}, 'scheduler': {}, 'step': 20, 'history': [], 'rng': Payload(marker)}, ck)
    with pytest.raises(CheckpointRefused, match='ckpt-00000020.pt'): train_toy(run, steps=20, ckpt_every=10)
    assert not marker.exists()

def test_trust_opt_in_unpickles(tmp_path, smoke_sd):
    marker = tmp_path/'MARKER'
    f = tmp_path/'mine.pth'; torch.save({'model': smoke_sd, 'hook': Payload(marker)}, f)
    r = ovstad('model', 'inspect', f, '--trust-checkpoint')
    assert r.returncode == 0 and marker.exists(), r.stderr[-2000:]
    marker.unlink()
    with trust_checkpoints(): load_checkpoint(f)
    assert marker.exists()

def test_random_bytes_are_unreadable_not_unpickled(tmp_path):
    f = tmp_path/'junk.pth'; f.write_bytes(os.urandom(4096))
    with pytest.raises(OvstadError, match='damaged, truncated or not a PyTorch checkpoint'): load_checkpoint(f, trust=True)

def test_released_checkpoint_with_namespace_loads_and_says_what_it_ignored(tmp_path, smoke_sd):
    f = tmp_path/'released.pth'
    torch.save({'model': smoke_sd, 'args': argparse.Namespace(lr=1e-4, model='ViCLIP'), 'epoch': 9}, f)
    r = ovstad('model', 'inspect', f)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'ignored the other entries args (Namespace)' in r.stderr
    assert "other entries in the file: ['args', 'epoch']" in r.stdout

def test_trainer_checkpoints_load_weights_only(tmp_path):
    train_toy(tmp_path/'r', steps=4, ckpt_every=2, optimizer='adamw')
    state = torch.load(latest_checkpoint(tmp_path/'r'), weights_only=True)
    assert {'model', 'optimizer', 'scheduler', 'rng', 'history', 'sampler'} <= set(state)

# ---- runs that look complete but are not ------------------------------------------------------------------------

@pytest.mark.parametrize('kv, field', [('steps=0', 'steps must be at least 1'), ('steps=-1', 'steps must be at least 1'),
                                       ('lr=-1', 'lr must be greater than 0'), ('batch_size=0', 'batch_size must be at least 1'),
                                       ('ckpt_every=0', 'ckpt_every must be at least 1'), ('warmup_steps=-3', 'warmup_steps must be at least 0')])
def test_non_positive_fields_refused_when_built(kv, field):
    with pytest.raises(OvstadError, match=field): override(TrainConfig(), [kv])

def test_cli_refuses_steps_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli(capsys, 'train', 'finetune', '--profile', 'smoke', '--set', 'steps=-1', '--runs-dir', tmp_path/'runs')
    refused(r, 'steps=-1', 'steps must be at least 1')
    assert not list(tmp_path.rglob('DONE.json')) and not (tmp_path/'runs').exists()

def test_resume_skips_a_truncated_newest_checkpoint(tmp_path, capsys):
    full = train_toy(tmp_path/'full', steps=30, ckpt_every=10, keep_ckpts=3)
    train_toy(tmp_path/'cut', steps=30, ckpt_every=10, keep_ckpts=3, stop_after=20)
    ck = tmp_path/'cut'/'checkpoints'/'ckpt-00000020.pt'; ck.write_bytes(ck.read_bytes()[:2048])
    rest = train_toy(tmp_path/'cut', steps=30, ckpt_every=10, keep_ckpts=3)
    assert rest.metrics['resumed_from'] == 10
    assert 'skipped ckpt-00000020.pt' in capsys.readouterr().err
    for a, b in zip(full.task.state_dict().values(), rest.task.state_dict().values()): assert torch.equal(a, b)

def test_resume_refuses_when_no_checkpoint_loads(tmp_path):
    train_toy(tmp_path/'r', steps=20, ckpt_every=10, stop_after=10)
    for p in (tmp_path/'r'/'checkpoints').glob('ckpt-*.pt'): p.write_bytes(b'\0' * 10)
    with pytest.raises(OvstadError, match=r'no checkpoint loads: .*ckpt-00000010\.pt'): resume_checkpoint(tmp_path/'r')

def test_done_json_digests_catch_a_damaged_artefact(tmp_path, capsys):
    r = Run('toy', TrainConfig(), runs_dir=tmp_path).prepare()
    (r.path/'viclip.pt').write_bytes(b'0123456789'); r.finish({'loss': 1.0}, 'viclip.pt')
    done = json.loads((r.path/'DONE.json').read_text())
    assert done['files']['viclip.pt']['bytes'] == 10 and len(done['files']['viclip.pt']['sha256']) == 64
    assert Run('toy', TrainConfig(), runs_dir=tmp_path).complete
    (r.path/'viclip.pt').write_bytes(b'0123456780')                          # same size, one byte changed
    again = Run('toy', TrainConfig(), runs_dir=tmp_path)
    assert not again.complete and not again.cached
    assert 'viclip.pt changed since' in capsys.readouterr().err

def test_run_records_hold_no_absolute_paths(tmp_path):
    (tmp_path/'w.pth').write_bytes(b'x')
    r = Run('toy', TrainConfig(), [tmp_path/'w.pth'], runs_dir=tmp_path/'runs').prepare()
    cfg = (r.path/'config.json').read_text()
    assert str(tmp_path) not in cfg and '"../w.pth"' in cfg

# ---- unwritable outputs, before the work ------------------------------------------------------------------------

def test_unwritable_outputs_detected_first(tmp_path, capsys):
    (tmp_path/'file').write_text('')
    with pytest.raises(OvstadError, match='is a file, not a folder'): Run('toy', TrainConfig(), runs_dir=tmp_path/'file'/'runs').prepare()
    with pytest.raises(OvstadError, match='is a file, not a folder'): train_toy(tmp_path/'file'/'run', steps=2)
    with pytest.raises(OvstadError, match='cannot be written'): ensure_writable('/proc/ovstad-test/out.csv')
    refused(cli(capsys, 'model', 'init', '--config', 'smoke', '--out', tmp_path/'file'/'x.pth'), 'is a file, not a folder')
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o555)
        try:
            with pytest.raises(OvstadError, match='not writable'): ensure_writable(ro/'x.csv')
        finally: ro.chmod(0o755)

# ---- parsers: a clear error, never a traceback ------------------------------------------------------------------

def _act(tmp_path, tubes):
    gt = {'labels': ['a', 'b'], 'gttubes': {'v': tubes}, 'nframes': {'v': 4}, 'resolution': {'v': (240, 320)},
          'train_videos': [['v']], 'test_videos': [[]]}
    p = tmp_path/'gt.pkl'; p.write_bytes(pickle.dumps(gt)); return p

def test_data_inspect_bad_inputs(tmp_path, capsys):
    (tmp_path/'notes').mkdir(); (tmp_path/'notes'/'x.txt').write_text('x')
    refused(cli(capsys, 'data', 'inspect', tmp_path/'notes'), 'is a folder, but not a frame folder')
    refused(cli(capsys, 'data', 'inspect', _act(tmp_path, [np.zeros((1, 5))])), "video 'v': field 'gttubes' must map label index")
    refused(cli(capsys, 'data', 'inspect', _act(tmp_path, {0: ['frame 1']})), "video 'v', label 0, tube 1: field 'boxes' must be numbers")
    p = tmp_path/'props.pkl'; p.write_bytes(pickle.dumps({'v,0902': np.zeros((2, 4), np.float32)}))
    refused(cli(capsys, 'data', 'inspect', p), "key 'v,0902': field 'boxes' must be (n, 5)")
    h = tmp_path/'det.csv'; h.write_text('video_id,timestamp,x1,y1,x2,y2,action_id,score\nv,902,0.1,0.1,0.5,0.5,1,0.9\n')
    refused(cli(capsys, 'data', 'inspect', h), 'det.csv:1:', 'remove the header line')

def _ava_files(tmp_path):
    gt = tmp_path/'gt.csv'; gt.write_text('v,0902,0.1,0.1,0.5,0.5,1,0\nv,0902,0.5,0.5,0.9,0.9,2,1\n')
    det = tmp_path/'dets.csv'; det.write_text('v,0902,0.1,0.1,0.5,0.5,1,0.9\nv,0902,0.5,0.5,0.9,0.9,2,0.8\n')
    lm = tmp_path/'map.txt'; lm.write_text('1: stand\n2: walk\n'); return gt, det, lm

def test_eval_ava_bad_inputs_name_the_file_and_line(tmp_path, capsys):
    gt, det, lm = _ava_files(tmp_path)
    assert cli(capsys, 'eval', 'ava', gt, det, '--label-map', lm).returncode == 0
    pk = tmp_path/'x.pkl'; pk.write_bytes(pickle.dumps({'a': 1}))
    refused(cli(capsys, 'eval', 'ava', pk, det, '--label-map', lm), 'x.pkl: this is a Python pickle, not an AVA gt CSV')
    refused(cli(capsys, 'eval', 'ava', gt, pk, '--label-map', lm), 'x.pkl: this is a Python pickle, not an AVA det CSV')
    h = tmp_path/'h.csv'; h.write_text('video_id,timestamp,x1,y1,x2,y2,action_id,score\n' + det.read_text())
    refused(cli(capsys, 'eval', 'ava', gt, h, '--label-map', lm), 'h.csv:1: this looks like a header line', 'remove the header line')
    bad = tmp_path/'bad.csv'; bad.write_text(det.read_text() + 'v,0902,abc,0.1,0.5,0.5,1,0.9\n')
    refused(cli(capsys, 'eval', 'ava', gt, bad, '--label-map', lm), 'bad.csv:3: 1 row(s) have a NaN or non-numeric', '(lines 3:')

def test_eval_ava_and_inspect_share_one_validator(tmp_path, capsys):
    "GT rows that `data inspect` rejects, `eval ava` rejects too, with the same 1-based line."
    _, det, lm = _ava_files(tmp_path)
    big = tmp_path/'big.csv'; big.write_text('v,0902,0.1,0.1,0.5,0.5,1,0\nv,0902,0.1,0.1,1.5,0.5,2,1\n')
    for r in (cli(capsys, 'data', 'inspect', big), cli(capsys, 'eval', 'ava', big, det, '--label-map', lm)):
        refused(r, 'big.csv:2: 1 row(s) have box coordinates outside [0, 1]')
    seven = tmp_path/'seven.csv'; seven.write_text('v,0902,0.1,0.1,0.5,0.5,1\nv,0902,0.5,0.5,0.9,0.9,2\n')
    assert cli(capsys, 'data', 'inspect', seven).returncode == 0          # the official reader takes 7-column GT rows
    assert cli(capsys, 'eval', 'ava', seven, det, '--label-map', lm).returncode == 0

def test_eval_act_empty_binary_and_unwritable_json(tmp_path, capsys):
    gt = _act(tmp_path, {0: [np.array([[1, 0, 0, 10, 10]], np.float32)]})
    e = tmp_path/'empty.csv'; e.write_text('')
    refused(cli(capsys, 'eval', 'act', gt, e), 'empty.csv is empty', 'header line')
    pk = tmp_path/'x.pkl'; pk.write_bytes(pickle.dumps({'a': 1}))
    refused(cli(capsys, 'eval', 'act', gt, pk), 'x.pkl is not a text CSV')
    h = tmp_path/'h.csv'; h.write_text('video,frame,label,score,x1,y1,x2,y2\n')
    (tmp_path/'afile').write_text('')
    r = cli(capsys, 'eval', 'act', gt, h, '--json', tmp_path/'afile'/'o.json')
    refused(r, 'JSON summary', 'is a file, not a folder')
    assert 'AP (%)' not in r.stdout                                       # refused before the work, not after the table
    gt_a, det_a, lm = _ava_files(tmp_path)
    r = cli(capsys, 'eval', 'ava', gt_a, det_a, '--label-map', lm, '--json', tmp_path/'afile'/'o.json')
    refused(r, 'is a file, not a folder'); assert 'AP (%)' not in r.stdout

def test_data_inspect_knows_the_projects_own_files(tmp_path):
    from ovstad.data import inspect_path
    from ovstad.benchmarks import default_ov_ava_split_path
    s = inspect_path(default_ov_ava_split_path())
    assert s['format'] == 'ov-ava-split' and s['counts']['all'] == {'base': 45, 'novel': 15}
    (tmp_path/'pretrain'/'videos').mkdir(parents=True)
    (tmp_path/'pretrain'/'captions.json').write_text(json.dumps([{'video': 'a.mp4', 'caption': 'a man waves', 'num_frames': 8, 'fps': 8}]))
    assert inspect_path(tmp_path/'pretrain')['format'] == 'corpus'
    assert inspect_path(tmp_path/'pretrain'/'captions.json')['n_pairs'] == 1
    (tmp_path/'world.json').write_text(json.dumps({'params_hash': 'h', 'counts': {'pretrain': 1, 'frames': 8}}))
    assert inspect_path(tmp_path/'world.json')['format'] == 'world'

@pytest.mark.skipif(not (SHARED/'jhmdb'/'JHMDB-GT.pkl').exists(), reason='../shared/data is absent')
def test_real_files_still_read(tmp_path):
    from ovstad.data import inspect_path
    assert inspect_path(SHARED/'jhmdb'/'JHMDB-GT.pkl')['n_videos'] == 928
    assert inspect_path(SHARED/'ava-sample'/'ava_proposals_sample.pkl')['format'] == 'ava-proposals'
    assert len(ClassList.from_pbtxt(SHARED/'ava-sample'/'ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt')) == 60

def test_label_map_escapes_round_trip(tmp_path):
    cl = ClassList.from_names(['a "big" wave', 'C:\\path', 'nod'], start=1)
    p = cl.to_pbtxt(tmp_path/'m.pbtxt')
    assert ClassList.from_pbtxt(p).names == cl.names
    from ovstad.data import inspect_path
    assert inspect_path(p)['n_labels'] == 3

def test_python_dash_m_works():
    r = ovstad('--help', module=True)
    assert r.returncode == 0 and 'usage: ovstad' in r.stdout


class _Payload:
    "A pickle payload that would create `marker` while loading (a __reduce__ calling os.system)."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize('reader', ['act_gt', 'frame_proposals', 'ava_proposals', 'box_file', 'inspect'])
def test_annotation_pickles_run_no_code(tmp_path, reader, monkeypatch):
    "An annotation pickle with a code-running payload is refused by name on every reading path; only the opt-in unpickles it fully."
    import pickle
    from ovstad import data as D
    monkeypatch.delenv('OVSTAD_TRUST_CHECKPOINTS', raising=False)
    marker = tmp_path/'ran'
    p = tmp_path/'evil.pkl'
    p.write_bytes(pickle.dumps({'labels': ['a'], 'gttubes': _Payload(marker)}))
    call = {'act_gt': lambda: D.read_act_gt(p), 'frame_proposals': lambda: D.read_frame_proposals(p),
            'ava_proposals': lambda: D.read_ava_proposals(p), 'box_file': lambda: D.read_box_file(p, 'evil', 25.0, (112, 112)),
            'inspect': lambda: D.inspect_path(p)}[reader]
    with pytest.raises(OvstadError, match=r'refused to unpickle: it imports (posix|os|nt)\.system.*OVSTAD_TRUST_CHECKPOINTS=1'):
        call()
    assert not marker.exists(), 'the payload ran'
    q = tmp_path/'counter.pkl'   # with the opt-in, a file the user trusts unpickles fully (a harmless non-annotation global)
    import collections
    q.write_bytes(pickle.dumps(collections.Counter('ab')))
    with pytest.raises(OvstadError, match='collections.Counter'): D._load_pickle(q)
    monkeypatch.setenv('OVSTAD_TRUST_CHECKPOINTS', '1')
    assert D._load_pickle(q) == collections.Counter('ab')


def test_annotation_pickles_of_python2_and_numpy_load_restricted(tmp_path):
    "Protocol 0/2 pickles (Python 2 names) and numpy arrays of either numpy load through the restricted unpickler."
    import pickle
    import numpy as np
    from ovstad.data import _load_pickle
    obj = {'labels': ['x'], 'a': np.arange(6, dtype=np.float32).reshape(2, 3), 's': np.float64(2.5), 't': (1, 'b'), 'o': {3}}
    for proto in (0, 2, 4):
        p = tmp_path/f'p{proto}.pkl'; p.write_bytes(pickle.dumps(obj, protocol=proto))
        got = _load_pickle(p)
        assert got['labels'] == ['x'] and got['a'].dtype == np.float32 and (got['a'] == obj['a']).all() and got['s'] == 2.5


def test_changed_annotation_file_gives_a_new_run_key(tmp_path):
    "The run cache keys on the annotation files' content: a truncated GT pickle (same name, even same size) or a touched video changes the key."
    from ovstad.data import data_fingerprint
    d = tmp_path/'ucf101-24'; (d/'videos').mkdir(parents=True)
    gt = d/'UCF101v2-GT.pkl'; gt.write_bytes(pickle.dumps({'labels': ['a', 'b']}))
    v = d/'videos'/'a.mp4'; v.write_bytes(b'\0' * 100)
    k0 = data_fingerprint(d)
    assert data_fingerprint(d) == k0
    gt.write_bytes(pickle.dumps({'labels': ['a', 'c']}))   # same size, other content
    k1 = data_fingerprint(d); assert k1 != k0
    gt.write_bytes(gt.read_bytes()[:10])                    # truncated
    k2 = data_fingerprint(d); assert k2 not in (k0, k1)
    os.utime(v, ns=(1, 1)); assert data_fingerprint(d) != k2   # a replaced video (size or time) too


def test_train_chain_set_and_show_config(tmp_path, capsys):
    "`train chain --set` reaches every training stage that has the field (unknown keys refused); --show-config runs nothing."
    from ovstad.cli import main as ovstad_main
    base = ['train', 'chain', '--profile', 'smoke', '--runs-dir', str(tmp_path/'runs'), '--finetune', '{"beta": 0.3}']
    assert ovstad_main(base + ['--align', '{}', '--set', 'steps=7', '--set', 'lr=1e-3', '--show-config']) == 0
    out = capsys.readouterr().out
    assert out.count('steps = 7 ') == 2 and out.count('lr = 0.001 ') == 2 and '# detect' in out
    assert not (tmp_path/'runs').exists() or not list((tmp_path/'runs').glob('*/DONE.json')), '--show-config ran something'
    for bad, msg in ((['--set', 'stepz=3'], 'did you mean steps'), (['--set', 'steps=-2'], 'steps')):
        assert ovstad_main(base + bad + ['--plan']) == 2
        assert msg in capsys.readouterr().err


@pytest.mark.parametrize('args, msg', [
    ('eval ava GT DET MAP --iou 2', '--iou: 2 is outside (0, 1]'), ('eval ava GT DET MAP --iou -1', '--iou: -1 is outside'),
    ('eval act GT DET --iou 0', '--iou: 0 is outside'), ('model inspect X --num-frames -2', '--num-frames: -2 is outside'),
    ('model inspect X --image-size 0', '--image-size: 0 is outside'), ('mini build --workers -3', '--workers: -3 is outside'),
    ('train finetune --device tpu9', "'tpu9' is not a device"), ('detect V --fps-keyframes 1e9', '--fps-keyframes: 1e9 is outside'),
    ('train finetune --executor slurm --mem-gb -5', '--mem-gb: -5 is outside'),
    ('train finetune --executor slurm --partition gpu --wrap=evil', 'unrecognized arguments: --wrap=evil'),
    ("train finetune --executor slurm --partition gpu;rm", "'gpu;rm' is not a Slurm name"),
])
def test_cli_refuses_out_of_range_arguments(args, msg, capsys):
    "Out-of-range numbers, unknown devices and option-like Slurm names are argparse errors (exit 2, the range named), never a traceback or a silent success."
    from ovstad.cli import main as ovstad_main
    with pytest.raises(SystemExit) as e: ovstad_main(args.split())
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_set_integers_are_exact_and_bounded():
    from ovstad.stages import get_recipe
    assert override(get_recipe('finetune', profile='smoke'), ['steps=1e3']).steps == 1000
    with pytest.raises(OvstadError, match='too large'): override(get_recipe('finetune', profile='smoke'), ['steps=999999999999999999999'])
    with pytest.raises(OvstadError, match='finite'): override(get_recipe('finetune', profile='smoke'), ['lr=inf'])


def test_outputs_that_are_folders_get_a_clear_error(tmp_path, capsys):
    "An output path naming a folder is an error naming it (no IsADirectoryError traceback), on the library call and the CLI."
    from ovstad.cli import main as ovstad_main
    from ovstad.core import atomic_save_json
    d = tmp_path/'out'; d.mkdir()
    with pytest.raises(OvstadError, match='is a folder; give a file path'): atomic_save_json({'a': 1}, d)
    assert ovstad_main(['model', 'init', '--config', 'smoke', '--out', str(d)]) == 2
    assert 'is a folder' in capsys.readouterr().err and not list(d.iterdir())
    f = tmp_path/'file'; f.write_text('x')
    with pytest.raises(OvstadError, match='cannot write'): atomic_save_json({'a': 1}, f/'sub.json')


def test_malformed_settings_and_captions_are_named(tmp_path, monkeypatch, capsys):
    "A malformed settings.ini in the working folder and a non-string caption are errors naming the file, never tracebacks."
    from ovstad.cli import main as ovstad_main
    from ovstad.data import read_captions
    monkeypatch.chdir(tmp_path)
    (tmp_path/'settings.ini').write_text('[defaults\nprofile = mini\n')
    assert ovstad_main(['train', 'finetune', '--show-config']) == 2
    assert 'settings.ini is not a readable settings file' in capsys.readouterr().err
    (tmp_path/'captions.json').write_text(json.dumps([{'video': 'a', 'caption': 3}]))
    with pytest.raises(OvstadError, match=r"record 0 \(caption\): a caption must be a non-empty string"): read_captions(tmp_path)


def test_killed_world_build_leaves_no_lock_behind(tmp_path):
    "SIGKILL of a `mini build` mid-render, then the same command: its workers died with it, so the rebuild starts at once."
    import signal, time
    out = tmp_path/'w'
    cmd = [sys.executable, '-m', 'ovstad', 'mini', 'build', '--profile', 'smoke', '--out', str(out), '--workers', '2']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out/'.build.lock').exists() and time.time() < deadline and p.poll() is None: time.sleep(0.05)
    time.sleep(1.0)   # rendering under way
    assert p.poll() is None, 'the build finished before it could be killed'
    p.kill(); p.wait()
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'another process is building' not in r.stderr, 'the rebuild waited on a dead build'
    assert (out/'world.json').exists() and time.time() - t0 < 240


def test_nan_weights_and_wrong_run_kinds_are_named(tmp_path, capsys):
    "A checkpoint with NaN weights is refused naming a tensor (no CSV of empty scores); `evaluate` on a pretrain run says what it is."
    from ovstad.cli import main as ovstad_main
    from ovstad.models import ViCLIP
    from ovstad.trainer import Run
    m = ViCLIP.from_config('smoke')
    with torch.no_grad(): m.vision_encoder.proj.fill_(float('nan'))
    p = m.save_checkpoint(tmp_path/'nan.pt')
    with pytest.raises(OvstadError, match=r'NaN or infinite values \(vision_encoder.proj'): ViCLIP.from_checkpoint(p)
    assert ovstad_main(['model', 'inspect', str(p)]) == 2 and 'NaN or infinite' in capsys.readouterr().err
    r = Run('pretrain', TrainConfig(steps=1), [], tmp_path/'runs'); r.prepare(); r.finish({}, None)
    assert ovstad_main(['evaluate', str(r.path)]) == 2
    assert 'is a pretrain run, not a detect run' in capsys.readouterr().err


def test_ava_rows_with_absurd_numbers_are_named(tmp_path):
    "An action id beyond int32 (which int64 parsing would wrap), an infinite or far-out box in an AVA CSV: refused naming the line."
    from ovstad.eval import read_ava_table
    for row, msg in (('v,902,0.1,0.1,0.5,0.5,99999999999999999999,0.9', 'action_id outside'),
                     ('v,902,0.1,0.1,1e308,0.5,3,0.9', 'far outside'), ('v,902,0.1,0.1,0.5,0.5,3,inf', 'infinite')):
        p = tmp_path/'det.csv'; p.write_text('v,902,0.1,0.1,0.5,0.5,3,0.5\n' + row + '\n')
        with pytest.raises(OvstadError, match=msg) as e: read_ava_table(p, 'det')
        assert ':2' in str(e.value), str(e.value)


def test_detect_boxes_beyond_the_video_are_named(tmp_path, capsys):
    "A --boxes row at a frame the video does not have is an error naming the file and frame, not 0 detections with rc 0."
    from ovstad.cli import main as ovstad_main
    video = SHARED/'videos'/'arm_wrestling.mp4'
    if not video.exists(): pytest.skip(f'{video} not present')
    b = tmp_path/'boxes.csv'; b.write_text('frame,x1,y1,x2,y2\n99999,10,10,50,80\n')
    rc = ovstad_main(['detect', str(video), '--boxes', str(b), '--checkpoint', 'smoke', '--prompts', 'a person waving',
                      '--out', str(tmp_path/'d.csv')])
    err = capsys.readouterr().err
    assert rc == 2 and 'lie outside' in err and '99999' in err and not (tmp_path/'d.csv').exists()


def test_slurm_missing_and_bad_accum_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    "--executor slurm without sbatch, and accum that does not divide the batch: refused at once (no pretraining first, no run folder)."
    from ovstad import cluster
    from ovstad.cli import main as ovstad_main
    monkeypatch.setattr(cluster.shutil, 'which', lambda name: None)
    runs = tmp_path/'runs'
    assert ovstad_main(['train', 'finetune', '--profile', 'smoke', '--runs-dir', str(runs), '--executor', 'slurm']) == 2
    assert 'needs Slurm (sbatch on PATH)' in capsys.readouterr().err and not runs.exists()
    assert ovstad_main(['train', 'finetune', '--profile', 'smoke', '--runs-dir', str(runs), '--set', 'accum=3']) == 2
    assert 'not a multiple of accum=3' in capsys.readouterr().err and not runs.exists()


def test_folder_options_naming_a_file_are_refused(tmp_path, capsys):
    "--reports-dir, --data and data region-text --out naming a file: one clear error each, before any work."
    from ovstad.cli import main as ovstad_main
    f = tmp_path/'afile'; f.write_text('x')
    if not (SHARED/'vidstg').exists(): pytest.skip(f'real data samples not present at {SHARED}')
    for argv, msg in ((['reproduce', '--profile', 'smoke', '--reports-dir', str(f)], 'is a file, not a folder'),
                      (['train', 'pretrain', '--profile', 'smoke', '--data', str(f), '--runs-dir', str(tmp_path/'r')], 'is a file; give a video-text folder'),
                      (['data', 'region-text', '--vidstg', str(SHARED/'vidstg'), '--out', str(f)], 'is a file, not a folder')):
        assert ovstad_main(argv) == 2, argv
        assert msg in capsys.readouterr().err, argv
    assert not (tmp_path/'r').exists()


def test_data_inspect_decodes_a_video_as_detect_will(tmp_path):
    "A video whose mdat is damaged is reported by `data inspect` (it decodes first, middle and last frames), as detect would fail on it."
    from ovstad.data import inspect_path
    src = SHARED/'videos'/'arm_wrestling.mp4'
    if not src.exists(): pytest.skip(f'{src} not present')
    assert inspect_path(src)['decoded'][0] == 0
    d = bytearray(src.read_bytes()); n = len(d); d[n // 3: 2 * n // 3] = bytes(2 * n // 3 - n // 3)
    bad = tmp_path/'bad.mp4'; bad.write_bytes(bytes(d))
    with pytest.raises(OvstadError, match='bad.mp4'): inspect_path(bad)


def test_act_detection_errors_name_file_lines(tmp_path, capsys):
    "eval act names the file line of a bad detection row (the header is line 1), not a 0-based data row."
    from ovstad.cli import main as ovstad_main
    if not (SHARED/'jhmdb'/'JHMDB-GT.pkl').exists(): pytest.skip(f'real data samples not present at {SHARED}')
    d = tmp_path/'det.csv'
    d.write_text('video,frame,label,score,x1,y1,x2,y2\nbrush_hair/x,1,0,0.5,1,1,5,5\nbrush_hair/x,1,0,abc,1,1,5,5\n')
    assert ovstad_main(['eval', 'act', str(SHARED/'jhmdb'/'JHMDB-GT.pkl'), str(d)]) == 2
    assert f'{d}:3: 1 row(s)' in capsys.readouterr().err


def test_short_ava_rows_are_called_short(tmp_path):
    "A detection row with fields missing at its end is reported as a short row (with the field count), not as a NaN."
    from ovstad.eval import read_ava_table
    p = tmp_path/'det.csv'; p.write_text('v,902,0.1,0.1,0.5,0.5,3,0.5\nv,902,0.1,0.1,0.5\n')
    with pytest.raises(OvstadError, match=r'det.csv:2: 1 row\(s\) are short .*8 fields'): read_ava_table(p, 'det')
