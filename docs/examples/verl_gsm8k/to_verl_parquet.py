"""GSM8K rows as verl's GSM8K preprocessing writes them (verl examples/data_preprocess/gsm8k.py): one Parquet row a
question with verl's columns `data_source`, `prompt` (chat messages), `ability`, `reward_model` ({style, ground_truth})
and `extra_info`. A verl user already has this file; this script makes it from GSM8K's JSONL for those who do not.

    python to_verl_parquet.py ../../../../shared/data/gsm8k/test.jsonl gsm8k.parquet --limit 200
"""
import argparse
import json
import re

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def ground_truth(answer: str) -> str:
    return re.search(r"#### (\-?[0-9\.\,]+)", answer).group(1).replace(",", "")


def rows(path: str, split: str, limit: int | None):
    with open(path) as f:
        for idx, line in enumerate(f):
            if limit is not None and idx >= limit:
                return
            ex = json.loads(line)
            yield {"data_source": "openai/gsm8k",
                   "prompt": [{"role": "user", "content": ex["question"] + " " + INSTRUCTION}],
                   "ability": "math",
                   "reward_model": {"style": "rule", "ground_truth": ground_truth(ex["answer"])},
                   "extra_info": {"split": split, "index": idx, "answer": ex["answer"], "question": ex["question"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl")
    p.add_argument("out")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int)
    args = p.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(list(rows(args.jsonl, args.split, args.limit))), args.out)


if __name__ == "__main__":
    main()
