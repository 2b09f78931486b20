import re


def score(completions, answer, **kwargs):
    """1 when the last number is the answer, minus 0.01 for every word past 20; the parts are logged too."""
    last = [re.findall(r"-?\d+", c.replace(",", ""))[-1:] for c in completions]
    correct = [float(n == [a]) for n, a in zip(last, answer)]
    brevity = [-0.01 * max(0, len(c.split()) - 20) for c in completions]
    return {"rewards": [c + b for c, b in zip(correct, brevity)], "correct": correct, "brevity": brevity}
