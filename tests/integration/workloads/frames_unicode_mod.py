"""A module test_frames.py copies under non-ASCII file names (Latin-1, CJK
and astral characters, so str kinds 1, 2 and 4), with non-ASCII names
inside. frames_unicode.py imports the copies and calls them after 'go'."""


def 分配(n, größe):
    ergebnis = [None] * n
    for i in range(n):
        ergebnis[i] = bytes(größe + i)  # 分配
    return ergebnis


def größe_ändern(n):
    ausgabe = [None] * n
    for i in range(n):
        ausgabe[i] = "ünïcödé-名前-🐍-%d" % i  # größe_ändern
    return ausgabe


class Ünïcödé:
    __slots__ = ("données",)

    def __init__(self, n):
        self.données = [bytearray(100 + i) for i in range(n)]  # Ünïcödé
