"""The mini ViCLIP shipped in the repository: its card, its world version, its refusal when damaged."""
import json
from pathlib import Path

import pytest
import torch

from ovstad.core import OvstadError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_mini_viclip_matches_its_card(tmp_path):
    "The mini chains start from the mini ViCLIP in the repository: its sha256 is its card's, its world is this generator's."
    import shutil
    from ovstad.core import file_digest
    from ovstad.models import ViCLIP
    from ovstad.stages import _check_release
    from ovstad.synth import GENERATOR_VERSION
    p = ROOT/'data'/'viclip-mini'/'viclip-mini.pt'
    card = json.loads(p.with_suffix('.json').read_text())
    assert p.stat().st_size <= 20 * 2**20 and card['bytes'] == p.stat().st_size
    assert file_digest(p)['sha256'] == card['sha256']
    assert card['world_generator_version'] == GENERATOR_VERSION, 're-release the mini ViCLIP for this world version'
    assert card['run'].startswith('pretrain-') and card['command'].startswith('ovstad train pretrain --profile mini')
    assert _check_release(p) == p
    m = ViCLIP.from_checkpoint(p)   # weights-only, strict
    assert m.config.name == 'mini' and torch.isfinite(m.temp).all()
    bad = tmp_path/p.name; shutil.copy(p, bad); shutil.copy(p.with_suffix('.json'), bad.with_suffix('.json'))
    with open(bad, 'r+b') as f: f.seek(p.stat().st_size // 2); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(OvstadError, match='does not match its card'): _check_release(bad)
