"""core.decode_step, the int4 Llama's one-token step without the modules: the modules' logits and KV cache."""

import pytest
import torch

from core import decode_step
from core.kv_cache import KVCache
from core.loading import load_model

from conftest import save_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_int4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-llama-int4")
    save_tiny_checkpoint("llama", directory)
    return load_model(str(directory), dtype="int4")[0]


def decode(model, steps: int) -> tuple[list[torch.Tensor], KVCache]:
    """Logits of a 5-token prefill and `steps` one-token steps (each feeding the last one's argmax), and the cache."""
    cache = KVCache.allocate(model.config, 1, 32, model.dtype)
    with torch.inference_mode():
        logits = [model(torch.tensor([[3, 17, 9, 40, 5]]), torch.arange(5)[None], kv_cache=cache, logits_to_keep=1)]
        for position in range(5, 5 + steps):
            token = logits[-1][:, -1].argmax(-1, keepdim=True)  # (1, 1)
            logits.append(model(token, torch.tensor([[position]]), kv_cache=cache))
    return logits, cache


def step_against_modules(model, monkeypatch) -> tuple[float, bool]:
    """The largest difference between the step's logits and the modules', relative to their scale, and whether
    the KV caches are equal; also checks that both pick the same tokens."""
    assert decode_step.layer_tensors(model) is not None  # an int4 Llama takes the step
    fast, fast_cache = decode(model, 12)
    with monkeypatch.context() as patch:
        patch.setitem(model.__dict__, "_decode_tensors", None)  # the modules, as for any other model
        slow, slow_cache = decode(model, 12)
    assert [f.argmax(-1).tolist() for f in fast] == [s.argmax(-1).tolist() for s in slow]
    assert all(f.shape == (1, 1, model.config.vocab_size) for f in fast[1:])
    same_cache = torch.equal(fast_cache.k[:, :, :, :17], slow_cache.k[:, :, :, :17]) and torch.equal(
        fast_cache.v[:, :, :, :17], slow_cache.v[:, :, :, :17])
    difference = max((f - s).abs().max().item() / s.abs().max().item() for f, s in zip(fast[1:], slow[1:], strict=True))
    return difference, same_cache


@pytest.fixture(params=["glued", "torch"])
def path(request, monkeypatch):
    """The step with core.cpu_kernels' small steps between its products ("glued", where the kernels run), or with
    torch's ops ("torch", as where they cannot be built)."""
    if request.param == "torch":
        monkeypatch.setattr(decode_step.cpu_kernels, "decode_glue", lambda: None)
    elif decode_step.cpu_kernels.decode_glue() is None:
        pytest.skip("core.cpu_kernels does not run here")
    return request.param


def test_the_step_computes_what_the_modules_do(tiny_int4, monkeypatch, path):
    """Same kernels on the same values with the same roundings: the same logits and KV cache to the bit."""
    assert step_against_modules(tiny_int4, monkeypatch) == (0.0, True)


def test_a_broken_step_is_caught(tiny_int4, monkeypatch, path):
    """The checks above fail when the step's products are 1% off (the modules' are left alone)."""
    kernel = decode_step.INT4_MM
    monkeypatch.setattr(decode_step, "INT4_MM", lambda *args: kernel(*args) * 1.01)
    with pytest.raises(AssertionError):
        assert step_against_modules(tiny_int4, monkeypatch) == (0.0, True)


def test_other_models_take_the_modules(tmp_path):
    save_tiny_checkpoint("llama", tmp_path)
    assert decode_step.layer_tensors(load_model(str(tmp_path))[0]) is None  # float32: plain Linear layers
