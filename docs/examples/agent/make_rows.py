"""GSM8K rows for agent.py: the question, the number it must end with, and a chat `prompt` (the eval's)."""
import argparse
import json

parser = argparse.ArgumentParser()
parser.add_argument("source")
parser.add_argument("out")
parser.add_argument("--limit", type=int, default=200)
args = parser.parse_args()
with open(args.source) as src, open(args.out, "w") as out:
    for line in list(src)[: args.limit]:
        row = json.loads(line)
        answer = row["answer"].rsplit("#### ", 1)[1].replace(",", "").strip()
        out.write(json.dumps({"question": row["question"], "answer": answer,
                              "prompt": [{"role": "user", "content": row["question"]}]}) + "\n")
