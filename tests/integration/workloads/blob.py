"""Allocates one big bytes object after 'go' and prints its address
(id() is the block's address for an object without a GC header)."""
import sys

print("ready", flush=True)
if sys.stdin.readline().strip() == "go":
    blob = bytes(100000)  # the block --address must find
    print("blob %d" % id(blob), flush=True)
    print("done", flush=True)
    sys.stdin.read()
