"""Prints 'ready', then sleeps, allocating a little now and then, until it
is killed or EXIT_AFTER seconds (argv[1]) have passed."""
import sys
import time

EXIT_AFTER = float(sys.argv[1]) if len(sys.argv) > 1 else 3600
sys.stdout.write("ready\n")
sys.stdout.flush()
start = time.time()
junk = []
while time.time() - start < EXIT_AFTER:
    junk.append(bytes(100))
    if len(junk) > 100:
        del junk[:]
    time.sleep(0.05)
