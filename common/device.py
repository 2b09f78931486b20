"""Where an actor's models live: the GPU Ray gave it, else the CPU.

Ray sets CUDA_VISIBLE_DEVICES for every actor: to the GPUs it asked for (`num_gpus` > 0), to none otherwise, so
"is a GPU visible" is "was this actor given one". Every model an actor holds (policy, reference, critic, HF engine,
reward model, sentence encoders) goes there; in-process (no Ray) that is the first GPU when the machine has one.

    >>> device_for(cuda_available=False)
    'cpu'
    >>> device_for(cuda_available=True)
    'cuda'
"""
from __future__ import annotations


def device_for(cuda_available: bool | None = None) -> str:
    """'cuda' where this process sees a GPU, else 'cpu' (`cuda_available` defaults to torch's answer)."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "cuda" if cuda_available else "cpu"


def pick_device():
    """This actor's torch.device by `device_for`."""
    import torch

    return torch.device(device_for())
