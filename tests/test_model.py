import pytest
import torch

from scalelab.model import GPT, GPTConfig
from scalelab.plan.shapes import flops_per_token, param_counts


@pytest.mark.parametrize("shape", [(1, 16, 2), (2, 32, 4), (3, 96, 3), (4, 128, 4)])
def test_param_counts_match_the_built_model(shape):
    n_layer, d_model, n_head = shape
    cfg = GPTConfig(vocab_size=300, context=64, n_layer=n_layer, d_model=d_model, n_head=n_head)
    model = GPT(cfg)
    non_embedding, total = param_counts(cfg)
    assert model.num_params() == total == sum(p.numel() for p in model.parameters())
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    assert model.num_params_non_embedding() == non_embedding == total - embeddings


def test_flops_formula():
    cfg = GPTConfig(vocab_size=2048, context=128, n_layer=4, d_model=128, n_head=4)
    non_embedding, total = param_counts(cfg)
    attention = 6 * 4 * 128 * 128
    assert flops_per_token(cfg) == (6 * non_embedding + attention, 6 * total + attention)


def test_init_has_no_denormals_and_head_is_tied():
    model = GPT(GPTConfig(vocab_size=300, context=32, n_layer=2, d_model=32, n_head=2))
    assert model.head.weight.data_ptr() == model.tok_emb.weight.data_ptr()
    for p in model.parameters():
        tiny = (p != 0) & (p.abs() < torch.finfo(torch.float32).tiny)
        assert not tiny.any()
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_loss_at_init_is_near_uniform_and_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, context=32, n_layer=2, d_model=32, n_head=2)).eval()
    x = torch.randint(0, 300, (2, 32))
    logits, loss, _ = model(x, torch.randint(0, 300, (2, 32)))
    assert abs(loss.item() - torch.log(torch.tensor(300.0)).item()) < 0.2
    y = x.clone()
    y[:, 20:] = (y[:, 20:] + 1) % 300  # the future must not change earlier positions
    logits2, _, _ = model(y)
    assert torch.allclose(logits[:, :20], logits2[:, :20], atol=1e-5)
    assert not torch.allclose(logits[:, 20:], logits2[:, 20:], atol=1e-5)


def test_cache_matches_full_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, context=16, n_layer=2, d_model=16, n_head=2)).eval()
    x = torch.randint(0, 100, (3, 12))
    full, _, _ = model(x)
    with torch.no_grad():
        logits, _, cache = model(x[:, :5])
        steps = [logits]
        for t in range(5, 12):
            logits, _, cache = model(x[:, t : t + 1], cache=cache)
            steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 17, dtype=torch.long))
