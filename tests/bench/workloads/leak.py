"""A slow leak inside a busy service loop: each request parses a JSON
body, builds a response through a few helper layers and drops it; one
request in 50 leaves an entry in a module-level cache that is never
evicted (the leak), and sessions and a small LRU churn alongside. The
leaking line is one of many allocating lines, as in a real service."""
import json
import sys

from common import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
CACHE = {}          # the leak: grows by one entry every 50 requests
SESSIONS = {}
LRU = []


def parse(i):
    return json.loads('{"user": %d, "items": [%d, %d, %d], "q": "search %d"}' % (i % 97, i, i + 1, i + 2, i))


def render(req):
    rows = [{"id": x, "label": "item-%d" % x} for x in req["items"]]
    return json.dumps({"user": req["user"], "rows": rows, "q": req["q"].upper()})


def remember(i, body):
    if i % 50 == 0:
        CACHE[i] = body + "!" * 200            # never evicted
    SESSIONS[i % 500] = {"last": i, "body": body[:40]}
    LRU.append(body[:20])
    if len(LRU) > 256:
        del LRU[:128]


def work():
    total = 0
    for i in range(N):
        req = parse(i)
        body = render(req)
        remember(i, body)
        total += len(body)
    return total


run(work)
