"""Generated code whose code objects die and whose addresses are reused.

usage: frames_codegen.py plain|tracemalloc N

On 'go', three loops of N rounds each compile and exec a new piece of code
and let it die, so the next round's code objects (and their line tables,
names, filenames) are allocated where the last round's were:

  gen:   "\\n" * (i % 5) + "keep[i] = b'-' * n", filename "<gen>"
  multi: the same with filename "<gen-%d>" % (i % 3)
  fn:    a function defined by generated code (filename "<fn-gen>") whose
         body line moves with i, called after its module code object died,
         and dropped after the call

Each round stores one bytes object (b'-' * n: one block, no temporary
tuple that could stay in a free list) in a preallocated list; its size is
unique to the round's (filename, line), so a block on the wrong line shows.
Prints 'plan <json>' before 'ready': {"expected": [[filename, line, block
size, count], ...]}; then 'done' (plain) or 'ref <json>' (tracemalloc
started at 'go': lineno statistics of the generated filenames). Exits at
EOF."""

import json
import sys
import tracemalloc  # in every mode: both runs then have the same history

MODE, N = sys.argv[1], int(sys.argv[2])
KEEP = {"gen": [None] * N, "multi": [None] * N, "fn": [None] * N}


def gen_round(i):
    line = i % 5 + 1
    return "<gen>", line, 5000 + 16 * line


def multi_round(i):
    line = i % 5 + 1
    return "<gen-%d>" % (i % 3), line, 4000 + 200 * (i % 3) + 16 * line


def fn_round(i):
    line = i % 5 + 2 + i % 4
    return "<fn-gen>", line, 3000 + 16 * line


def expected():
    out = {}
    for rounds in (gen_round, multi_round, fn_round):
        for i in range(N):
            filename, line, size = rounds(i)
            key = (filename, line, size + 33)  # bytes: 33 bytes of header
            out[key] = out.get(key, 0) + 1
    return [[f, l, s, c] for (f, l, s), c in sorted(out.items())]


def run_gen(keep, rounds):
    ns = {"keep": keep}
    for i in range(N):
        filename, line, size = rounds(i)
        ns["i"], ns["n"] = i, size
        exec(compile("\n" * (line - 1) + "keep[i] = b'-' * n\n", filename, "exec"), ns)


def run_fn(keep):
    for i in range(N):
        filename, line, size = fn_round(i)
        src = "\n" * (i % 5) + "def f(keep, i, n):\n" + "\n" * (i % 4) + "    keep[i] = b'-' * n\n"
        ns = {}
        exec(compile(src, filename, "exec"), ns)
        f = ns.pop("f")
        del ns
        f(keep, i, size)
        del f


def reference():
    snap = tracemalloc.take_snapshot()
    stats = [{"filename": s.traceback[0].filename, "lineno": s.traceback[0].lineno,
              "size": s.size, "count": s.count}
             for s in snap.statistics("lineno") if s.traceback[0].filename.startswith(("<gen", "<fn-gen"))]
    print("ref " + json.dumps({"lineno": stats}), flush=True)


def main():
    print("plan " + json.dumps({"file": __file__, "expected": expected()}), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    run_gen(KEEP["gen"], gen_round)
    run_gen(KEEP["multi"], multi_round)
    run_fn(KEEP["fn"])
    if MODE == "tracemalloc":
        reference()
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
