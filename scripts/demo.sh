#!/bin/sh
# The README's first command: installs what is needed, builds tmtrace, starts
# the bundled example (a service that leaks slowly) and watches it for a few
# reports, then stops both. Run as root.
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh
make -s

# pyenv's CPython 3.11 (full fidelity), else the system's python3.
python=""
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python3.11 /root/.pyenv/versions/3.11.*/bin/python3.11; do
	[ -x "$p" ] && python="$p"
done
[ -n "$python" ] || python=$(command -v python3)

"$python" tests/integration/workloads/leaky.py &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT INT TERM
sleep 1
echo "demo: watching the example (pid $pid, $python) for 4 reports, 3 s apart"
build/tmtrace -p "$pid" -i 3 --count 4 "$@"
