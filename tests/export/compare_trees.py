"""Compares two Instaloader-style export trees, e.g. Trawl's export and the tree the real
Instaloader 4.16 wrote for the same profiles (see docs/instaloader-tree.md).

    python compare_trees.py A B [--mtime media|all|none] [--key-order] [--ignore GLOB]...
                                [--max-per-file N]

Exits 0 when the trees match, 1 with a readable list of differences, 2 on bad arguments.

What must match:
- the same relative paths, files and directories alike (an empty directory counts);
- `*.json.xz`: the xz container's integrity-check type (Instaloader writes CHECK_NONE), then the
  decompressed JSON, parsed and compared value by value, types included (1 and 1.0 and true
  differ, as they do in the bytes Instaloader writes); with `--key-order`, also the order of
  every object's keys (Instaloader keeps insertion order, no sort_keys);
- other `*.json` (the `_comments.json` files): parsed and compared the same way;
- everything else (pictures, videos, `.txt` captions, the `id` files): identical bytes;
- modification times, to the second, of the files Instaloader dates itself (`--mtime media`, the
  default): everything except `*.json`, `*.json.xz` and `id`. Instaloader leaves those three at
  the time it wrote them, so two correct trees written at different times differ there.
  `--mtime all` compares every file, `--mtime none` none.

ALLOWED_DIFFERENCES below lists the JSON values that may differ, each with its reason. It is
meant to stay as short as honesty allows: add an entry only for a value that cannot be the same
in two correct trees.
"""
import argparse
import fnmatch
import json
import lzma
import math
import os
import sys

# (file glob, JSON path pattern, rule, reason)
#   file glob: fnmatch pattern on the relative path, e.g. "*.json.xz" or "*/*_comments.json"
#   JSON path pattern: keys and list indexes joined by "/", "*" for any one step, "**" for any
#     number of steps (including none), e.g. "node/iphone_struct/**/url"
#   rule: "ignore" (any value on both sides, as long as the key exists on both), or
#     "url-without-query" (strings compared up to their first "?")
ALLOWED_DIFFERENCES = [
]

XZ_MAGIC = b"\xfd7zXZ\x00"
XZ_CHECKS = {0x00: "none", 0x01: "CRC32", 0x04: "CRC64", 0x0A: "SHA-256"}


def walk(root):
    files, dirs = set(), set()
    for here, subdirs, names in os.walk(root):
        rel = os.path.relpath(here, root)
        for d in subdirs:
            dirs.add(os.path.normpath(os.path.join(rel, d)))
        for n in names:
            files.add(os.path.normpath(os.path.join(rel, n)))
    return files, dirs


def ignored(rel, globs):
    return any(fnmatch.fnmatchcase(rel, g) for g in globs)


def kind_of(rel):
    if rel.endswith(".json.xz"):
        return "xz"
    if rel.endswith(".json"):
        return "json"
    return "bytes"


def dated(rel, mode):
    """Whether the file's mtime is compared."""
    if mode == "none":
        return False
    if mode == "all":
        return True
    return not (rel.endswith(".json") or rel.endswith(".json.xz") or os.path.basename(rel) == "id")


def xz_check(raw):
    if not raw.startswith(XZ_MAGIC) or len(raw) < 12:
        return None
    return XZ_CHECKS.get(raw[7] & 0x0F, "unknown 0x%02x" % raw[7])


def path_matches(pattern, path):
    """pattern: list of steps ("*", "**" or a literal); path: list of str steps."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(path_matches(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    return (head == "*" or head == path[0]) and path_matches(rest, path[1:])


def rule_for(rel, path):
    steps = [str(p) for p in path]
    for glob, pattern, rule, _reason in ALLOWED_DIFFERENCES:
        if fnmatch.fnmatchcase(rel, glob) and path_matches(pattern.split("/"), steps):
            return rule
    return None


def show(value, limit=120):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def same_scalar(a, b):
    return type(a) is type(b) and a == b


def diff_json(rel, a, b, path, key_order, out):
    rule = rule_for(rel, path)
    where = "/".join(str(p) for p in path) or "(root)"
    if rule == "ignore":
        return
    if rule == "url-without-query" and isinstance(a, str) and isinstance(b, str):
        if a.split("?", 1)[0] != b.split("?", 1)[0]:
            out.append(f"{where}: {show(a)} != {show(b)} (compared without query)")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k not in b:
                out.append(f"{where}: key {show(k)} only in A (= {show(a[k])})")
        for k in b:
            if k not in a:
                out.append(f"{where}: key {show(k)} only in B (= {show(b[k])})")
        if key_order:
            common_a = [k for k in a if k in b]
            common_b = [k for k in b if k in a]
            if common_a != common_b:
                out.append(f"{where}: key order differs: A {show(common_a, 300)} B {show(common_b, 300)}")
        for k in a:
            if k in b:
                diff_json(rel, a[k], b[k], path + [k], key_order, out)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: list of {len(a)} in A, {len(b)} in B")
        for i, (x, y) in enumerate(zip(a, b)):
            diff_json(rel, x, y, path + [i], key_order, out)
        return
    if not same_scalar(a, b):
        out.append(f"{where}: A {show(a)} != B {show(b)}")


def load_json(data, rel, side, problems):
    try:
        return json.loads(data.decode("utf-8")), True
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{rel}: not JSON in {side}: {err}")
        return None, False


def compare_file(a_root, b_root, rel, args):
    """Returns a list of difference lines (without the path) for one file present on both sides."""
    out = []
    pa, pb = os.path.join(a_root, rel), os.path.join(b_root, rel)
    with open(pa, "rb") as f:
        ra = f.read()
    with open(pb, "rb") as f:
        rb = f.read()
    kind = kind_of(rel)
    if kind == "bytes":
        if ra != rb:
            first = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
            out.append(f"bytes differ ({len(ra)} bytes in A, {len(rb)} in B, first difference at byte {first})")
    else:
        if kind == "xz":
            ca, cb = xz_check(ra), xz_check(rb)
            if ca is None or cb is None:
                out.append(f"not an xz stream in {'A' if ca is None else 'B'}")
                return out
            if ca != cb:
                out.append(f"xz integrity check: {ca} in A, {cb} in B")
            try:
                ra, rb = lzma.decompress(ra), lzma.decompress(rb)
            except lzma.LZMAError as err:
                out.append(f"xz does not decompress: {err}")
                return out
        problems = []
        ja, oka = load_json(ra, rel, "A", problems)
        jb, okb = load_json(rb, rel, "B", problems)
        out.extend(p.split(": ", 1)[1] for p in problems)
        if oka and okb:
            found = []
            diff_json(rel, ja, jb, [], args.key_order, found)
            if len(found) > args.max_per_file:
                found = found[:args.max_per_file] + [f"… and {len(found) - args.max_per_file} more"]
            out.extend(found)
    if dated(rel, args.mtime):
        ma = math.floor(os.stat(pa).st_mtime)
        mb = math.floor(os.stat(pb).st_mtime)
        if ma != mb:
            out.append(f"mtime {ma} in A, {mb} in B ({mb - ma:+d} s)")
    return out


def main(argv):
    parser = argparse.ArgumentParser(description="Compare two Instaloader export trees.")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--mtime", choices=["media", "all", "none"], default="media",
                        help="which files' modification times must match to the second (default: media)")
    parser.add_argument("--key-order", action="store_true",
                        help="also require JSON objects' keys in the same order")
    parser.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                        help="leave out relative paths matching GLOB (repeatable)")
    parser.add_argument("--max-per-file", type=int, default=20, metavar="N",
                        help="at most N JSON differences listed per file (default 20)")
    args = parser.parse_args(argv)
    for root in (args.a, args.b):
        if not os.path.isdir(root):
            parser.error(f"{root} is not a directory")

    fa, da = walk(args.a)
    fb, db = walk(args.b)
    fa = {p for p in fa if not ignored(p, args.ignore)}
    fb = {p for p in fb if not ignored(p, args.ignore)}
    da = {p for p in da if not ignored(p, args.ignore)}
    db = {p for p in db if not ignored(p, args.ignore)}

    lines = []
    for p in sorted(fa - fb):
        lines.append(f"{p}: file only in A")
    for p in sorted(fb - fa):
        lines.append(f"{p}: file only in B")
    for p in sorted(da - db):
        lines.append(f"{p}/: directory only in A")
    for p in sorted(db - da):
        lines.append(f"{p}/: directory only in B")
    for p in sorted(fa & fb):
        for d in compare_file(args.a, args.b, p, args):
            lines.append(f"{p}: {d}")

    if lines:
        print(f"trees differ: A={args.a} B={args.b}")
        for line in lines:
            print("  " + line)
        print(f"{len(lines)} difference(s); {len(fa & fb)} files on both sides, "
              f"{len(fa - fb)} only in A, {len(fb - fa)} only in B")
        return 1
    print(f"trees match: {len(fa)} files, {len(da)} directories")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
