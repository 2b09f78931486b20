"""Pure pieces of the phases: which sampled completions rejection-sampled SFT keeps (one case per line)."""
from common.types import Rollout
from trainer.phases import keep_passing


def _rollout(texts, reasons, group_size=2):
    n = len(texts)
    return Rollout(prompt_ids=[[10 + i // group_size] for i in range(n)], completion_ids=[[i, 1] for i in range(n)],
                   old_logprobs=[[0.0, 0.0]] * n, texts=texts, finish_reasons=reasons, group_size=group_size)


def test_keep_passing_table():
    r = _rollout(["<answer>1+2</answer>",      # prompt 7: passes
                  "<answer>1+2</answer> ",     # prompt 7: the same answer up to whitespace -> a repeat
                  "<answer>3</answer>",        # prompt 8: reward below the threshold
                  "<answer>2+1</answer>",      # prompt 8: passes
                  "<answer>4",                 # prompt 9: cut at the token limit (no EOS) -> never kept
                  "<answer>1*3</answer>"],     # prompt 9: passes
                 ["stop", "stop", "stop", "stop", "length", "stop"])
    kept = keep_passing(r, [1.0, 1.0, 0.3, 1.0, 1.0, 1.0], [7, 8, 9], threshold=1.0, max_per_prompt=None,
                        seen=set(), per_prompt={})
    assert [(k["prompt_index"], k["text"]) for k in kept] == [
        (7, "<answer>1+2</answer>"), (8, "<answer>2+1</answer>"), (9, "<answer>1*3</answer>")]
    assert kept[0]["prompt_ids"] == [10] and kept[0]["completion_ids"] == [0, 1]  # the sampled tokens, unchanged


def test_keep_passing_caps_per_prompt_across_batches():
    seen, per_prompt = set(), {}
    first = keep_passing(_rollout(["a", "b"], ["stop", "stop"]), [1.0, 1.0], [5], 0.5, 1, seen, per_prompt)
    second = keep_passing(_rollout(["a", "c"], ["stop", "stop"]), [1.0, 1.0], [6], 0.5, 1, seen, per_prompt)
    again = keep_passing(_rollout(["d", "e"], ["stop", "stop"]), [1.0, 1.0], [5], 0.5, 1, seen, per_prompt)
    assert [k["text"] for k in first] == ["a"]         # at most one per prompt
    assert [k["text"] for k in second] == ["a"]        # another prompt: its "a" is not a repeat of prompt 5's
    assert again == [] and per_prompt == {5: 1, 6: 1}  # prompt 5 is full from the earlier batch


def test_a_kept_multi_turn_completion_keeps_its_policy_mask():
    """RS-SFT then trains on the policy's own tokens of it, the tools' observations as context."""
    r = Rollout([[10], [10]], [[1, 2, 3], [4]], [[-0.1, 0.0, -0.2], [-0.3]], ["a <search>q</search>obs b", "c"],
                ["stop", "stop"], 2, policy_mask=[[1, 0, 1], [1]])
    kept = keep_passing(r, [1.0, 1.0], [3], 0.5, None, set(), {})
    assert [k["policy_mask"] for k in kept] == [[1, 0, 1], [1]]
    assert "policy_mask" not in keep_passing(_rollout(["a", "b"], ["stop", "stop"]), [1.0, 1.0], [5], 0.5, None,
                                             set(), {})[0]
