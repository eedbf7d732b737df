"""A small service that leaks slowly: the bundled example for tmtrace.

Run it, then `sudo build/tmtrace -p PID` from another terminal. Every tick
it handles a few "requests"; one code path keeps a reference it should not.
With 'ready' protocol support for tests: if stdin is not a terminal and
--wait is given, it waits for 'go' before starting."""

import json
import random
import sys
import time

CACHE = {}
HISTORY = []


def handle_request(i):
    payload = json.dumps({"id": i, "items": list(range(i % 50))})
    parsed = json.loads(payload)
    if i % 10 == 0:
        # the leak: every tenth request is remembered forever
        HISTORY.append(parsed)
    CACHE[i % 100] = payload
    return len(payload)


def main():
    if "--wait" in sys.argv:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
    print("leaky.py running as pid %d" % __import__("os").getpid(), flush=True)
    i = 0
    rng = random.Random(42)
    while True:
        for _ in range(200):
            handle_request(i)
            i += 1
        blob = bytes(rng.randrange(100, 5000))  # short-lived
        del blob
        time.sleep(0.05)


if __name__ == "__main__":
    main()
