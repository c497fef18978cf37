"""Execute library notebooks and keep the outputs a reader learns from: shapes, a `repr`, a table, a plot.

    python tools/keep_outputs.py nbs/07b_stages.ipynb nbs/01_models.ipynb   # or no argument: every library notebook

Each notebook runs twice in a fresh kernel (in nbs/, as nbdev-test runs it). A code cell keeps its outputs
only when both runs printed the same thing and that thing holds no run-specific detail (a temporary path,
an object address, a duration); every other output is dropped, and so is stderr (logs, progress bars), so the committed outputs are the
deterministic ones and re-running this tool leaves the notebooks unchanged. Hidden (`#| hide`) and exported
cells keep none; an output larger than the caps below is dropped too. `nbdev-clean` runs afterwards, so
`tools/check_sync.py` still passes.
"""
import argparse, copy, json, re, subprocess, sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_TEXT = 4_000          # characters of text a cell may keep
MAX_IMAGE = 150_000       # bytes (base64) of an image a cell may keep
RUN_SPECIFIC = re.compile(r'/tmp/|/var/folders/|tmp[a-z0-9_]{8}|pytest-of-| at 0x[0-9a-f]+|'  # paths, addresses
                          r'\d+\.\d+ ?(s|ms|sec|seconds)\b|it/s|s/it|\d{4}-\d\d-\d\dT\d\d:\d\d')  # durations, times


def _directives(src: str) -> set[str]:
    return {l[3:].strip().split()[0] for l in src.splitlines() if l.startswith('#| ') and l[3:].strip()}


def _text(out) -> str:
    if out.get('output_type') == 'stream': return out.get('text', '')
    if out.get('output_type') == 'error': return ''
    return ''.join(v if isinstance(v, str) else json.dumps(v) for v in out.get('data', {}).values())


def _results(cell) -> list:
    "A cell's outputs less its stderr stream: logs and progress bars, which name durations and run folders."
    return [o for o in cell.get('outputs', []) if not (o.get('output_type') == 'stream' and o.get('name') == 'stderr')]


def _keepable(outs: list) -> bool:
    if not outs: return False
    if any(o.get('output_type') == 'error' for o in outs): return False
    for o in outs:
        data = o.get('data', {})
        if 'application/vnd.jupyter.widget-view+json' in data: return False  # a widget needs its live kernel
        for k, v in data.items():
            if k.startswith('image/') and len(v) > MAX_IMAGE: return False
    text = ''.join(_text(o) for o in outs if not any(k.startswith('image/') for k in o.get('data', {})))
    return len(text) <= MAX_TEXT and not RUN_SPECIFIC.search(text)


def _strip(outs: list) -> list:
    "Outputs as nbdev-clean leaves them: no execution counts, no transient metadata."
    res = copy.deepcopy(outs)
    for o in res:
        o.pop('execution_count', None)
        if 'metadata' in o: o['metadata'] = {}
    return res


def execute(path: Path, kernel: str) -> nbformat.NotebookNode:
    "Run `path` in a fresh kernel as nbdev-test does: cells marked `#| eval: false` are skipped."
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == 'code' and re.search(r'^#\|\s*eval:\s*false', c.source, re.M): c.source = ''
    NotebookClient(nb, timeout=1200, kernel_name=kernel, resources={'metadata': {'path': str(path.parent)}}).execute()
    return nb


def keep_outputs(path: Path, kernel: str = 'python3') -> tuple[int, int]:
    "Run `path` twice and write it back with its deterministic outputs; returns (cells kept, cells with output)."
    a, b = execute(path, kernel), execute(path, kernel)
    nb = nbformat.read(path, as_version=4)
    kept = seen = 0
    for c, ca, cb in zip(nb.cells, a.cells, b.cells):
        if c.cell_type != 'code': continue
        c.outputs, c.execution_count = [], None
        if _directives(c.source) & {'hide', 'export', 'exporti', 'exports', 'default_exp'}: continue
        oa, ob = _strip(_results(ca)), _strip(_results(cb))
        if oa: seen += 1
        if oa == ob and _keepable(oa): c.outputs = oa; kept += 1
    nbformat.write(nb, path)
    return kept, seen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('notebooks', nargs='*', type=Path, help='library notebooks (default: every nbs/*.ipynb)')
    p.add_argument('--kernel', default='python3', help='Jupyter kernel to run them in (default: python3)')
    a = p.parse_args(argv)
    nbs = a.notebooks or sorted(q for q in (ROOT/'nbs').glob('*.ipynb') if not q.name.startswith(('_', '.')))
    for nb in nbs:
        kept, seen = keep_outputs(nb.resolve(), a.kernel)
        print(f"{nb}: kept the outputs of {kept} of the {seen} cells that printed something")
    subprocess.run([str(BIN/'nbdev-clean')], cwd=ROOT, check=True)
    return 0


if __name__ == '__main__': sys.exit(main())
