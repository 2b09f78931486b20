"""The error every reward raises when it cannot score a batch: a bug in our code or data, or a user's function or
server that failed; the message names the reward, the sample and the fix."""


class RewardError(RuntimeError):
    """A reward component could not score a batch; the message carries the sample."""
