"""Start-up time of the `ovstad` command line: `--help` of every command and an argument error, as a ratio to
`python -c pass` (the interpreter's own start-up) on this machine. Target: under 1 s each.

    python benchmarks/cli.py [--repeat N]

Building the parser imports only `ovstad.core` (no torch, no pandas); a command imports its module when it runs.
"""
import argparse, statistics, subprocess, sys, time
from pathlib import Path

BIN = Path(sys.executable).parent/'ovstad'
CASES = [['--help'], ['mini', 'build', '--help'], ['data', 'inspect', '--help'], ['model', 'init', '--help'],
         ['eval', 'act', '--help'], ['train', 'finetune', '--help'], ['train', 'chain', '--help'], ['detect', '--help'],
         ['reproduce', '--help'], ['eval', 'ava', 'gt.csv'],           # an argument error (missing --label-map)
         ['train', 'finetune', '--benchmark', 'nope']]                 # an argument error (bad choice)

def timed(cmd, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); subprocess.run(cmd, capture_output=True); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeat', type=int, default=5, help='runs per case; the median is reported (default 5)')
    a = ap.parse_args(argv)
    base = timed([sys.executable, '-c', 'pass'], a.repeat)
    print(f"python -c pass: {base:.3f} s (median of {a.repeat})")
    worst = 0.0
    for c in CASES:
        t = timed([str(BIN)] + c, a.repeat); worst = max(worst, t)
        print(f"ovstad {' '.join(c):32} {t:6.3f} s  {t / base:5.1f}x python start-up")
    print(f"slowest: {worst:.3f} s ({'under' if worst < 1 else 'OVER'} the 1 s target)")
    return 0

if __name__ == '__main__': sys.exit(main())
