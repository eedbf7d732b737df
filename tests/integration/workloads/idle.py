"""Prints 'ready', then sleeps, allocating a little now and then, until it
is killed or, given the argument 'eof', until its stdin is closed (it then
exits on its own, with status 0)."""
import select
import sys
import time

UNTIL_EOF = sys.argv[1:] == ["eof"]
sys.stdout.write("ready\n")
sys.stdout.flush()
junk = []
while True:
    junk.append(bytes(100))
    if len(junk) > 100:
        del junk[:]
    if not UNTIL_EOF:
        time.sleep(0.05)
    elif select.select([sys.stdin], [], [], 0.05)[0] and not sys.stdin.readline():
        break
