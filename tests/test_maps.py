"""The similarity-map page of `ovstad reproduce` (nbs/experiments/explore_similarity_maps.ipynb, Table 6's model on
two-person clips of the generated smoke world): maps.md / maps.html with their figures, sentences computed from the
numbers, the README's link; and a failing maps step recorded without failing the tables."""
import html, json, os, re
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('MPLBACKEND', 'agg')
from ovstad import tables as T
from ovstad.explore import heat_sentence, maps_summary

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT/'nbs'/'experiments'/T.MAPS_NOTEBOOK


def test_maps_notebook_parameters_and_no_quoted_numbers():
    import nbformat, papermill as pm
    nb = nbformat.read(NB, as_version=4)
    assert sum('parameters' in c.metadata.get('tags', []) for c in nb.cells) == 1
    params = pm.inspect_notebook(str(NB))
    assert {'profile', 'device', 'runs_dir', 'reports_dir', 'seed', 'data_root', 'chain_api'} <= set(params)
    assert all(v['help'] for v in params.values()), 'every parameter carries a comment'
    intro = nb.cells[0].source
    intro = intro.replace('chance 50%', '')   # the chance level is a definition, not a result
    assert nb.cells[0].cell_type == 'markdown' and not re.search(r'\d\.\d|\d%', intro), 'the opening cell quotes no results'


@pytest.fixture(scope='module')
def maps_run(tmp_path_factory):
    "The maps step as `reproduce` runs it, on the smoke profile with a private run cache (Table 6's chain is trained: seconds)."
    tmp = tmp_path_factory.mktemp('maps')
    params = dict(profile='smoke', device='cpu', runs_dir=str(tmp/'runs'), reports_dir=str(tmp/'rep'), seed=0)
    r = T.execute_maps_notebook(params, tmp/'rep', cwd=ROOT)
    T.write_reports_readme(tmp/'rep', {'profile': 'smoke', 'tables': {}, 'maps': r})
    return tmp/'rep', r


def test_maps_page_names_existing_figures_and_computed_sentences(maps_run):
    rep, r = maps_run
    assert r['ok'], f"{r['error']} (log {r['executed']})"
    md, page = (rep/'maps.md').read_text(), (rep/'maps.html').read_text()
    rec = json.loads((rep/'maps.json').read_text())
    md_figs = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', md)
    html_figs = re.findall(r"<img src='([^']+)'", page)
    assert md_figs and set(md_figs) == set(html_figs)
    for f in md_figs:
        assert not os.path.isabs(f) and (rep/f).is_file() and (rep/f).stat().st_size > 5_000, f
    assert len(rec['clips']) >= 2, 'the smoke world has two-person val keyframes'
    assert {c['figure'] for c in rec['clips']} | {rec['pairs_figure']} == set(md_figs)
    for c in rec['clips']:
        assert len(c['box_labels']) >= 2 and set(c['parts']) == {'base', 'novel'}
        for part, p in c['parts'].items():
            s = heat_sentence(c, part)            # recomputed from the page's own numbers
            assert s == p['sentence'] and s in md and html.escape(s) in page
            assert f"the {part} prompt '{p['prompt']}'" in s
    summary = maps_summary(rec['clips'], rec['readings'])
    assert summary == rec['summary'] and summary in md and html.escape(summary) in page
    base = rec['readings']['base']
    assert base['pairs'] > 0 and f"{100 * base['pair_hits'] / base['pairs']:.1f}% of {base['pairs']} actor pairs" in summary
    assert rec['model']['chain'] == T.get_table(6).row('ours').chain_for('smoke')
    assert 'finetune-' in rec['model']['finetune_run'] and rec['model']['checkpoint'].endswith('.pt')


def test_readme_links_the_maps_page(maps_run):
    rep, r = maps_run
    readme, readme_html = (rep/'README.md').read_text(), (rep/'README.html').read_text()
    assert '(maps.md)' in readme and '(maps.html)' in readme and 'status: ok' in readme
    assert "href='maps.html'" in readme_html and "href='maps.md'" in readme_html
    assert json.loads((rep/'maps.json').read_text())['summary'] in readme


def test_failed_maps_step_is_recorded_not_raised(tmp_path, monkeypatch):
    "A chain function that gives no finetune run fails the maps notebook: the summary and README say so, Table 6 is still written."
    (tmp_path/'fakechain.py').write_text(
        "from ovstad.tables import FakeChainResult\n"
        "def run_chain(benchmark, profile, align=None, finetune=None, eval_beta=None, runs_dir='runs', device='auto', seed=0, data_root=None):\n"
        "    return FakeChainResult(0.3, 0.2, 0.25, runs=[])\n")
    monkeypatch.setenv('PYTHONPATH', f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    s = T.reproduce(profile='smoke', tables=[6], device='cpu', runs_dir='runs', reports_dir='rep', cwd=tmp_path,
                    chain_api='fakechain:run_chain', log=lambda *a: None)
    assert s['tables']['6']['ok'], s['tables']
    assert not s['maps']['ok'] and 'no finetune run' in s['maps']['error']
    assert (tmp_path/'rep'/'table6.md').exists() and (tmp_path/'rep'/'executed'/T.MAPS_NOTEBOOK).exists()
    readme = (tmp_path/'rep'/'README.md').read_text()
    assert 'Similarity maps' in readme and 'status: FAILED' in readme
    assert json.loads((tmp_path/'rep'/'reproduce.json').read_text())['maps']['ok'] is False
