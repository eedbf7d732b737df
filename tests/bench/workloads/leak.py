"""A slow leak inside a busy service loop: each request parses a JSON
body, builds a response through a few helper layers and drops it; one
request in 50 leaves an entry in a module-level cache that is never
evicted (the leak). Alongside, as in a real service, bounded state holds
memory of its own: sessions, an LRU, per-user statistics, an audit log,
a connection pool, rate-limit windows, compiled routes and a response
cache; the leaking line is one of a dozen lines that hold memory."""
import collections
import json
import re
import sys

from common import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
CACHE = {}          # the leak: grows by one entry every 50 requests
SESSIONS = {}
LRU = []
USERS = {}
AUDIT = collections.deque(maxlen=3000)
POOL = []
WINDOWS = {}
ROUTES = {}
RESPONSES = collections.OrderedDict()


class Connection:
    def __init__(self, n):
        self.n = n
        self.buffer = bytearray(300)
        self.peer = ("10.0.%d.%d" % (n // 250, n % 250), 5432)


def parse(i):
    return json.loads('{"user": %d, "items": [%d, %d, %d], "q": "search %d"}' % (i % 97, i, i + 1, i + 2, i))


def route(req):
    key = "/search/%d" % (req["user"] % 40)
    if key not in ROUTES:
        ROUTES[key] = re.compile(r"^/search/(\d+)/%s$" % req["user"])
    return ROUTES[key]


def render(req):
    rows = [{"id": x, "label": "item-%d" % x} for x in req["items"]]
    return json.dumps({"user": req["user"], "rows": rows, "q": req["q"].upper()})


def remember(i, req, body):
    if i % 50 == 0:
        CACHE[i] = body + "!" * 200            # never evicted
    SESSIONS[i % 500] = {"last": i, "body": body[:40]}
    LRU.append(body[:20])
    if len(LRU) > 256:
        del LRU[:128]
    stats = USERS.setdefault(req["user"], {"hits": 0, "queries": []})
    stats["hits"] += 1
    stats["queries"] = stats["queries"][-40:] + [req["q"]]
    AUDIT.append((i, req["user"], "GET /search %d" % i))
    if len(POOL) < 150 and i % 40 == 0:
        POOL.append(Connection(len(POOL)))
    WINDOWS[i % 700] = [i, i + 1, i + 2, i + 3]
    RESPONSES[i % 400] = body.encode()
    if len(RESPONSES) > 300:
        RESPONSES.popitem(last=False)


def work():
    total = 0
    for i in range(N):
        req = parse(i)
        route(req)
        body = render(req)
        remember(i, req, body)
        total += len(body)
    return total


run(work)
