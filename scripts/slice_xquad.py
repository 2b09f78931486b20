"""Write jobs/data/xquad.en.first200.json: the first 200 questions of XQuAD-en (SQuAD v1.1 format, in file order,
unchanged; CC BY-SA 4.0, attribution in jobs/data/XQUAD.md), so that a run of at most that many questions (the smoke
preset: 120) trains from a fresh clone with no shared data beside it.

    python scripts/slice_xquad.py ../shared/data/xquad/xquad.en.json
"""
import json
import sys
from pathlib import Path

N = 200


def main(src: str) -> None:
    data = json.loads(Path(src).read_text())
    out, n = [], 0
    for article in data["data"]:
        paragraphs = []
        for p in article["paragraphs"]:
            qas = p["qas"][: N - n]
            if qas:
                paragraphs.append({**p, "qas": qas})
                n += len(qas)
            if n == N:
                break
        if paragraphs:
            out.append({**article, "paragraphs": paragraphs})
        if n == N:
            break
    target = Path(__file__).resolve().parents[1] / "jobs" / "data" / f"xquad.en.first{N}.json"
    target.write_text(json.dumps({"version": data["version"], "data": out}, ensure_ascii=False))
    print(f"{target}: {n} questions, {sum(len(a['paragraphs']) for a in out)} paragraphs, {target.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
