"""A real one-node Slurm cluster in a temporary folder, for the tests of `ovstad.cluster` (and by hand).

Debian's `slurm-wlm` and `munge` packages provide the daemons (`.ci/run` installs them). Everything the cluster
writes (munge key and socket, slurm.conf, state, spool, logs) lives under one folder, on ports of its own, so
it neither needs nor touches a system Slurm. CPU only: `ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`.

    python tests/slurm_cluster.py start /tmp/slurm   # prints `export SLURM_CONF=...`
    python tests/slurm_cluster.py stop /tmp/slurm
"""
from __future__ import annotations
import os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

DAEMONS = ('munged', 'slurmctld', 'slurmd')

def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path('/usr/sbin')/name, Path('/sbin')/name) if p.exists()), None)

def missing_programs() -> list:
    "The programs of slurm-wlm / munge that are not installed (empty when a cluster can start)."
    return [n for n in (*DAEMONS, 'sbatch', 'squeue', 'scancel', 'scontrol') if _which(n) is None]

def _free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    for s in socks: s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks: s.close()
    return ports

class SlurmCluster:
    "Start (`start()`), use (`env`, `run(...)`) and stop (`stop()`) a one-node Slurm whose files all live in `root`."
    def __init__(self, root, cpus: int | None = None, partition: str = 'debug'):
        self.root, self.partition = Path(root).resolve(), partition
        self.cpus = cpus or os.cpu_count() or 2
        self.node = socket.gethostname().split('.')[0]
        self.conf = self.root/'slurm.conf'
        self.procs: dict = {}
    @property
    def env(self) -> dict:
        "The environment that points Slurm's client commands (sbatch, squeue, ...) at this cluster."
        return {**os.environ, 'SLURM_CONF': str(self.conf)}
    def __repr__(self):
        up = [n for n, p in self.procs.items() if p.poll() is None]
        return f"SlurmCluster({self.root}, node {self.node}, {self.cpus} CPUs, up: {', '.join(up) or 'nothing'})"

    def _write_conf(self):
        r = self.root
        for d in ('state', 'spool', 'log', 'munge'): (r/d).mkdir(parents=True, exist_ok=True)
        key = r/'munge'/'munge.key'
        if not key.exists():
            key.write_bytes(os.urandom(1024)); key.chmod(0o400)
        ctld, slurmd = _free_ports(2)
        mem = 4096
        try: mem = max(1024, int(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**20 * 0.8))
        except (ValueError, OSError, AttributeError): pass
        user = os.environ.get('USER') or __import__('pwd').getpwuid(os.getuid()).pw_name
        self.conf.write_text(f"""\
ClusterName=ovstadtest
SlurmctldHost={self.node}
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r/'munge'/'munge.socket'}
StateSaveLocation={r/'state'}
SlurmdSpoolDir={r/'spool'}
SlurmctldPidFile={r/'slurmctld.pid'}
SlurmdPidFile={r/'slurmd.pid'}
SlurmctldLogFile={r/'log'/'slurmctld.log'}
SlurmdLogFile={r/'log'/'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=2
InactiveLimit=0
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
NodeName={self.node} CPUs={self.cpus} RealMemory={mem} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 30.0) -> 'SlurmCluster':
        "Write the config and start munged, slurmctld and slurmd; wait until the node takes jobs."
        miss = missing_programs()
        if miss: raise RuntimeError(f"Slurm cannot start: {', '.join(miss)} not installed (apt-get install slurm-wlm munge)")
        self._write_conf(); r = self.root; log = open(r/'log'/'daemons.out', 'ab')
        m = r/'munge'
        self.procs['munged'] = subprocess.Popen(
            [_which('munged'), '-F', '--force', f'--key-file={m/"munge.key"}', f'--socket={m/"munge.socket"}',
             f'--pid-file={m/"munged.pid"}', f'--log-file={m/"munged.log"}', f'--seed-file={m/"munged.seed"}'],
            stdout=log, stderr=log, start_new_session=True)
        self._wait(lambda: (m/'munge.socket').exists(), timeout, 'munged did not create its socket')
        self.procs['slurmctld'] = subprocess.Popen([_which('slurmctld'), '-D', '-i', '-f', str(self.conf)], env=self.env,
                                                   stdout=log, stderr=log, start_new_session=True)
        self.procs['slurmd'] = subprocess.Popen([_which('slurmd'), '-D', '-f', str(self.conf)], env=self.env,
                                                stdout=log, stderr=log, start_new_session=True)
        def idle():
            q = subprocess.run(['sinfo', '-h', '-o', '%t'], env=self.env, capture_output=True, text=True)
            return q.returncode == 0 and q.stdout.strip() in ('idle', 'mix', 'alloc')
        self._wait(idle, timeout, 'the node did not come up idle')
        return self

    def _wait(self, ok, timeout, what):
        t0 = time.time()
        while time.time() - t0 < timeout:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead: raise RuntimeError(f"{', '.join(dead)} exited; see {self.root/'log'}")
            if ok(): return
            time.sleep(0.2)
        self.stop(); raise RuntimeError(f"{what} within {timeout:.0f} s; see {self.root/'log'}")

    def run(self, *cmd, check: bool = True, **kw) -> subprocess.CompletedProcess:
        "Run a Slurm client command (squeue, scancel, ...) against this cluster."
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=check, **kw)

    def stop(self) -> None:
        "Cancel every job, then stop the daemons (slurmd, slurmctld, munged)."
        if self.procs.get('slurmctld') and self.procs['slurmctld'].poll() is None:
            subprocess.run(['scancel', '--full', '-u', str(os.getuid())], env=self.env, capture_output=True)
            subprocess.run(['scancel', '-u', str(os.getuid())], env=self.env, capture_output=True)
        for n in reversed(DAEMONS):
            p = self.procs.pop(n, None)
            if p is None or p.poll() is not None: continue
            os.killpg(p.pid, signal.SIGTERM)
            try: p.wait(10)
            except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait()
    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()

if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('start', 'stop'): sys.exit(__doc__)
    c = SlurmCluster(sys.argv[2])
    if sys.argv[1] == 'start':
        c.start(); [p.__setattr__('returncode', 0) for p in c.procs.values()]   # leave the daemons running
        print(f"export SLURM_CONF={c.conf}")
    else:
        for n in ('slurmd.pid', 'slurmctld.pid', 'munge/munged.pid'):
            f = c.root/n
            if f.exists():
                try: os.kill(int(f.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError): pass
