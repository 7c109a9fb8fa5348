"""Scores OCR reads against a labelled set: line accuracy (a ground-truth
line counts when some read line equals it exactly, spaces trimmed) and
character error rate (for each ground-truth line, the edit distance to
the closest read line, over all ground-truth characters).

    python score.py labels.jsonl reads.jsonl [reads2.jsonl ...]

Prints one JSON object per reads file.
"""

import json
import sys


def distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def score(labels, reads):
    lines = exact = chars = errors = 0
    for file, truth in labels.items():
        got = [l["text"].strip() for l in reads.get(file, [])]
        for line in truth:
            lines += 1
            chars += len(line)
            if line in got:
                exact += 1
                continue
            errors += min([distance(line, g) for g in got] or [len(line)])
    return {"images": len(labels), "lines": lines,
            "line_accuracy_pct": round(100 * exact / max(lines, 1), 2),
            "cer_pct": round(100 * errors / max(chars, 1), 2)}


def main():
    labels = {}
    for l in open(sys.argv[1]):
        row = json.loads(l)
        labels[row["file"]] = row["lines"]
    for path in sys.argv[2:]:
        reads = {}
        for l in open(path):
            row = json.loads(l)
            reads[row["file"]] = row["lines"]
        print(json.dumps({"reads": path, **score(labels, reads)}))


if __name__ == "__main__":
    main()
