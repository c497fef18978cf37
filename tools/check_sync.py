"""Fail when `nbdev-clean` or `nbdev-export` would change a file under nbs/ or ovstad/.

The notebooks are the source of the library: the exported package and the cleaned notebooks must be
committed in sync. This runs both tools and lists every file they changed, created or removed.
"""
import hashlib, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def snapshot():
    files = [p for d in ('nbs', 'ovstad') for p in (ROOT/d).rglob('*')
             if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts
             and p.suffix in ('.ipynb', '.py')]
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

def main():
    before = snapshot()
    for tool in ('nbdev-clean', 'nbdev-export'):
        r = subprocess.run([str(BIN/tool)], cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            print(f"{tool} failed:\n{r.stdout}{r.stderr}"); return 1
    after = snapshot()
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    new, gone = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    if changed or new or gone:
        print("notebooks and library are out of sync: nbdev-clean / nbdev-export changed these files")
        for k in changed: print(f"  changed: {k}")
        for k in new: print(f"  created: {k}")
        for k in gone: print(f"  removed: {k}")
        print("Edit the notebooks in nbs/, run `make export`, and commit both.")
        return 1
    print(f"nbdev sync check: {len(after)} files in nbs/ and ovstad/ unchanged by nbdev-clean and nbdev-export")
    return 0

if __name__ == '__main__': sys.exit(main())
