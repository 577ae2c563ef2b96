#!/usr/bin/env python3
"""Replaces (or appends) one benchmark's marked section of a results file.

    bench/write-section.py FILE NAME < report.md

The section is delimited by <!-- bench-NAME:begin --> and <!-- bench-NAME:end -->, so each
benchmark rewrites only its own figures.
"""
import sys

path, name = sys.argv[1], sys.argv[2]
report = sys.stdin.read().rstrip("\n")
begin, end = f"<!-- bench-{name}:begin -->", f"<!-- bench-{name}:end -->"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmark results\n"
section = f"{begin}\n{report}\n{end}"
if begin in text and end in text:
    text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
