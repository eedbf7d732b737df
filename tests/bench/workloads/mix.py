"""A realistic mix: JSON encode/decode, regular expressions and dataclass
processing over records, as a web service's request handling does."""
import dataclasses
import json
import re
import sys

from common import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
WORD = re.compile(r"[a-z]+(\d+)")


@dataclasses.dataclass
class Record:
    ident: int
    name: str
    tags: list
    score: float


def work():
    total = 0
    for i in range(N):
        recs = [Record(j, "name%d" % j, ["t%d" % (j % 7), "x"], j * 0.5) for j in range(20)]
        payload = json.dumps([dataclasses.asdict(r) for r in recs])
        back = json.loads(payload)
        total += sum(int(m.group(1)) for r in back for m in WORD.finditer(r["name"]))
        total += len(",".join(r["tags"][0] for r in back))
    return total


run(work)
