"""Sharded workers never hold the whole model (learner/holder.py Sharded, learner/fsdp.py meta_lm + load_shards): each
builds the model on the meta device and reads only its rows from the checkpoint's safetensors. Measured: each of 2
and 4 workers of the embedded model grows at start by its part, not by the whole model; and what they hold equals a
whole load, from the embedded model, an HF folder (one file; several files in bf16 with an index), and our own
sharded checkpoint, on an uneven split (3 workers), the tied head kept tied, the critic's and the reference's too."""
import json

import pytest
import torch

from tests.learner.test_fsdp import _spawn
from tests.tiny_models import save_model, tiny_llama

EMBEDDED = "embedded:smollm2-135m-instruct"


def _rss() -> int:
    import os

    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """This process's peak resident memory (VmHWM) set to what it holds now (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak() -> int:
    """VmHWM of this process: its own memory's peak (getrusage's ru_maxrss also keeps the peak of the process it was
    forked from before its exec: under the whole suite, the test process's GiBs)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rows(param) -> tuple[torch.Tensor, slice]:
    """A parameter's local tensor and the rows of the whole tensor it holds."""
    if not hasattr(param, "to_local"):
        return param.detach(), slice(None)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    return param.to_local().detach(), slice(offset[0], offset[0] + shape[0])


def _same_as_whole(lm, folder: str) -> list[str]:
    """The names of `lm`'s parameters whose rows differ from a whole load of `folder` ([] = all equal)."""
    from common.models import load_lm

    whole = dict(load_lm(folder).named_parameters())
    return [n for n, p in lm.named_parameters() if not torch.equal(_rows(p)[0], whole[n].detach()[_rows(p)[1]])]


# ---- the embedded model: each worker's growth at start is its part ------------------------------------------------

def _start(rank, world, port, folder):
    from transformers import AutoConfig

    import learner.fsdp  # noqa: F401  (the imports every worker has before it builds anything)
    from learner.holder import hold

    AutoConfig.from_pretrained(folder)  # transformers' one-time imports at first use, before the baseline
    _reset_peak()
    base = _rss()
    held = hold(folder, sharding="fsdp")
    held.join("127.0.0.1", port, world, rank, "gloo")
    grew = _peak() - base  # the process's peak since it started, less what it had before building the model
    part = sum(_rows(p)[0].numel() * 4 for p in held.lm.parameters())
    return grew, part, _same_as_whole(held.lm, folder)


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_workers_of_the_embedded_model_grow_at_start_by_their_part_only(world):
    from transformers import AutoConfig

    from common.models import resolve_model
    from learner.fsdp import meta_lm

    folder = resolve_model(EMBEDDED)
    whole = sum(p.numel() * 4 for p in meta_lm(folder).parameters())  # fp32 bytes, the tied head once (~538 MB)
    AutoConfig.from_pretrained(folder)
    out = _spawn(_start, world, folder)
    for rank, (grew, part, differ) in enumerate(out):
        assert differ == [], f"worker {rank}: {differ[:3]} differ from a whole load"
        assert abs(part - whole / world) < 0.01 * whole  # its rows of every tensor
        # its part and the model's structure (~15 MB measured), never a whole copy on the way
        assert grew < whole / world + 48 * 2**20, (f"worker {rank} of {world} grew {grew / 2**20:.0f} MiB at start; "
                                                   f"its part is {part / 2**20:.0f} MiB of {whole / 2**20:.0f}")


# ---- the sources: an HF folder (one file; several in bf16), our sharded checkpoint, on an uneven split --------------

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    one = save_model(tiny_llama(seed=0, tie_word_embeddings=True), root / "one")
    several = root / "several"
    tiny_llama(seed=1, tie_word_embeddings=True).to(torch.bfloat16).save_pretrained(several, max_shard_size="20KB")
    untied = save_model(tiny_llama(seed=2, tie_word_embeddings=False), root / "untied")
    return {"one": one, "several": str(several), "untied": untied}


def _sources(rank, world, port, folders, ours):
    from learner import fsdp
    from learner.critic import Critic
    from learner.policy import Reference
    from learner.holder import hold

    out = {}
    for name in ("one", "several", "untied"):
        held = hold(folders[name], sharding="fsdp")
        _join(held, out, rank, world, port)
        out[name] = (_same_as_whole(held.lm, folders[name]), fsdp.tied(held.model))
        if name == "one":  # our sharded checkpoint, written from these shards in files of ~20 KB with an index
            fsdp.save_hf(held.model, ours, rank, max_shard_bytes=20_000)
            if rank == 0:  # as Learner.save does beside the weights
                from tests.tiny_models import tiny_tokenizer

                tiny_tokenizer().save_pretrained(ours)
    import torch.distributed as dist

    dist.barrier()  # worker 0 wrote the checkpoint
    ref = Reference(ours, sharding="fsdp")
    _join(ref.held, out, rank, world, port)
    out["ours"] = (_same_as_whole(ref.held.lm, folders["one"]), fsdp.tied(ref.held.model))
    ref.reload(folders["several"])  # another folder into the same shards
    out["reloaded"] = (_same_as_whole(ref.held.lm, folders["several"]), fsdp.tied(ref.held.model))
    critic = Critic(folders["one"], sharding="fsdp", seed=3)
    _join(critic.held, out, rank, world, port)
    head = {n: fsdp.full_tensor(p).detach().numpy().copy() for n, p in critic.model.head.named_parameters()}  # by value
    out["critic"] = (_same_as_whole(critic.held.lm, folders["one"]), head)
    return out


def _join(held, out, rank, world, port):
    """Each holder meets the workers over a group of its own (a port each; FSDP's default group is made once)."""
    held.join("127.0.0.1", port + len(out), world, rank, "gloo")


def test_three_workers_load_every_source_as_a_whole_load_does(folders, tmp_path):
    from learner.critic import Critic

    out = _spawn(_sources, 3, folders, str(tmp_path / "ours"))
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # ours came in several files
    whole_critic = Critic(folders["one"], seed=3)  # replicated: the head a sharded critic must draw too
    for rank, got in enumerate(out):
        for source in ("one", "several", "untied", "ours", "reloaded"):
            differ, tied = got[source]
            assert differ == [], f"worker {rank}, {source}: {differ[:3]} differ from a whole load"
            assert tied == (source != "untied"), f"worker {rank}, {source}: the head's tie"
        differ, head = got["critic"]
        assert differ == []
        for n, p in whole_critic.model.head.named_parameters():
            assert torch.equal(torch.from_numpy(head[n]), p.detach()), f"worker {rank}: the critic's head {n}"


def test_a_folder_without_safetensors_is_refused_naming_the_fix(tmp_path):
    from learner.fsdp import checkpoint_files

    (tmp_path / "config.json").write_text("{}")
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no \\*.safetensors.*save_pretrained.*learner.sharding=replicate"):
        checkpoint_files(str(tmp_path))


# ---- on a GPU: the shard read straight onto the device -------------------------------------------------------------

def _gpu_start(rank, world, port, folder):
    from learner.holder import hold

    held = hold(folder, sharding="fsdp")
    held.join("127.0.0.1", port, world, rank, "nccl")
    part = sum(_rows(p)[0].numel() * 4 for p in held.lm.parameters())
    on_gpu = all(_rows(p)[0].is_cuda for p in held.lm.parameters())
    from common.models import load_lm

    whole = {n: p.detach() for n, p in load_lm(folder).named_parameters()}
    differ = [n for n, p in held.lm.named_parameters() if not torch.equal(_rows(p)[0].cpu(), whole[n][_rows(p)[1]])]
    return torch.cuda.max_memory_allocated(), part, on_gpu, differ


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_on_a_gpu_a_worker_reads_its_shard_onto_the_device(folders):
    """NCCL, one worker: the shard lands on the GPU, equal to a whole load, and the GPU held no more than it (plus
    buffers) on the way."""
    allocated, part, on_gpu, differ = _spawn(_gpu_start, 1, folders["one"])[0]
    assert on_gpu and differ == []
    assert allocated <= part + 2**20
