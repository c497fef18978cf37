import subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).parent

def test_help_lists_subcommands():
    r = subprocess.run([str(BIN/'ovstad'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'usage: ovstad' in r.stdout and 'examples:' in r.stdout

def test_no_command_prints_help_and_fails():
    r = subprocess.run([str(BIN/'ovstad')], capture_output=True, text=True)
    assert r.returncode == 2 and 'usage: ovstad' in r.stdout
