"""Runs leaky.py compiled under the relative name 'leaky.py', as code run
from a relative path has it in co_filename: tmtrace must find its source
through the target's cwd."""
import sys

with open("leaky.py") as f:
    code = compile(f.read(), "leaky.py", "exec")
exec(code, {"__name__": "__main__"})
