"""What the overhead benchmarks share: the workloads, and the protocol of
tests/bench/workloads/common.py (the workload prints 'ready', tmtrace
attaches, 'go' starts the work, 'elapsed <seconds>' ends it)."""

import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TMTRACE = os.path.join(ROOT, "build", "tmtrace")
WORKLOADS_DIR = os.path.join(HERE, "workloads")
# name -> (script, its argument in bench-overhead.py)
WORKLOADS = {"micro": ("micro.py", "300000"), "mix": ("mix.py", "2000"),
             "threads": ("threads.py", "75000"), "leak": ("leak.py", "20000")}


def start_workload(python, workload, arg=None, env=None):
    """The workload's process, ready for tmtrace to attach."""
    script, default_arg = WORKLOADS[workload]
    full = dict(os.environ if env is None else env)
    full.pop("PYTHONTRACEMALLOC", None)
    p = subprocess.Popen([python, os.path.join(WORKLOADS_DIR, script), arg or default_arg], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=full, cwd=WORKLOADS_DIR)
    assert p.stdout.readline().strip() == "ready"
    return p


def attach(tmtrace, pid, args, env=None):
    """tmtrace attached to pid, and its notes up to the probe summary
    (kernel memory among them): it traces from then on."""
    tracer = subprocess.Popen([tmtrace, "-p", str(pid)] + args, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env)
    line = tracer.stderr.readline()
    if not line.startswith("tmtrace: attached"):
        raise SystemExit("tmtrace did not attach: %r" % line)
    notes = []
    while "probes on" not in line and "probes," not in line:
        notes.append(line)
        line = tracer.stderr.readline()
        if not line:
            break
    notes.append(line)
    return tracer, notes


def go(p):
    """Runs the work: its line 'elapsed <seconds>' (anything else is a
    failed run: seconds_of() says None). The workload exits right after;
    finish() waits for it."""
    p.stdin.write("go\n")
    p.stdin.flush()
    return p.stdout.readline()


def seconds_of(line):
    return float(line.split()[1]) if line.startswith("elapsed ") else None


def finish(p):
    p.stdin.close()
    p.wait()
