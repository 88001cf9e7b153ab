"""The reference candidate (initial_program.py): causal, stateless, batch-independent, and its
indexer learns. Small vocabulary, real sequence length, fp32."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.spec import SPEC

VOCAB = 512
T = SPEC.seq_len
# The top-k path computes its softmax in fp32 (for bf16 training), so float64 inputs agree with
# the dense float64 path to fp32 precision.
FP32_SOFTMAX = dict(atol=1e-6, rtol=1e-5)


def make(reference, schedule="progressive_sparse", seed=0, **kw):
    torch.manual_seed(seed)
    return reference.PLASAModel(vocab_size=VOCAB, hidden_size=SPEC.hidden_size, n_layers=SPEC.n_layers,
                                n_heads=SPEC.n_heads, max_seq_len=T, schedule=schedule, **kw)


def logits(model, ids):
    return model(ids)[0]


def test_progressive_schedule_is_documented_k(reference):
    model = make(reference)
    assert model.layer_top_k == [128, 32, 32, 64]
    expected = {"dense_baseline": [128] * 4, "uniform_sparse": [64] * 4,
                "dense_to_sparse": [128, 64, 64, 96], "aggressive_middle": [64, 32, 32, 64],
                "reverse_progressive": [32, 64, 64, 128]}
    for name, ks in expected.items():
        assert reference.layer_top_k(name, 4, T) == ks, name
    assert reference.layer_top_k("progressive_sparse", 6, 64) == [64, 64, 16, 16, 16, 32]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("schedule", sorted(
    ["dense_baseline", "uniform_sparse", "dense_to_sparse", "aggressive_middle", "progressive_sparse",
     "reverse_progressive"]))
def test_changing_token_j_leaves_earlier_logits_unchanged(reference, schedule, mode):
    model = make(reference, schedule)
    model.train(mode == "train")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, T), generator=gen)
    base = logits(model, ids)
    for j in (0, 17, 64, 127):
        changed = ids.clone()
        changed[:, j] = (changed[:, j] + 1 + torch.randint(0, VOCAB - 1, (2,), generator=gen)) % VOCAB
        out = logits(model, changed)
        if j > 0:
            assert (out[:, :j] - base[:, :j]).abs().max() <= 1e-5, f"leak into positions < {j}"
        assert (out[:, j:] - base[:, j:]).abs().max() > 0, "the changed token had no effect at all"


def naive_topk_attention(q, k, v, scores, top_k):
    """Loop reference: row t attends softmax over its min(top_k, t+1) best past keys."""
    B, H, T_, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for t in range(T_):
            past = scores[b, t, : t + 1]
            keep = torch.sort(past, descending=True, stable=True).indices[: min(top_k, t + 1)]
            att = (q[b, :, t:t + 1] @ k[b, :, keep].transpose(-2, -1)) / math.sqrt(D)  # (H, 1, n)
            out[b, :, t] = (att.softmax(-1) @ v[b, :, keep])[:, 0]
    return out


@pytest.mark.parametrize("top_k", [1, 5, 16, 40], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("length", [7, 40], ids=lambda t: f"T{t}")
def test_topk_mask_never_selects_future_and_matches_naive(reference, top_k, length):
    gen = torch.Generator().manual_seed(top_k * 100 + length)
    scores = torch.randn(2, length, length, generator=gen)
    scores[0, :, :3] = 0.0  # ties, broken by position
    keep = reference.causal_topk_mask(scores, top_k)
    rows = torch.arange(length)[:, None]
    cols = torch.arange(length)[None, :]
    assert not keep[:, cols > rows].any(), "a future position was selected"
    assert torch.equal(keep.sum(-1), torch.clamp(torch.arange(length) + 1, max=top_k).expand(2, -1))
    q, k_, v = (torch.randn(2, 2, length, 8, generator=gen, dtype=torch.float64, requires_grad=True)
                for _ in range(3))
    att = (q @ k_.transpose(-2, -1)) / math.sqrt(8)
    fast = att.masked_fill(~keep[:, None], float("-inf")).softmax(-1) @ v
    slow = naive_topk_attention(q, k_, v, scores, top_k)
    torch.testing.assert_close(fast, slow)
    grads_fast = torch.autograd.grad(fast.square().sum(), (q, k_, v))
    grads_slow = torch.autograd.grad(slow.square().sum(), (q, k_, v))
    for gf, gs in zip(grads_fast, grads_slow):
        torch.testing.assert_close(gf, gs)


@pytest.mark.parametrize("length", [16, 33], ids=lambda t: f"T{t}")
def test_topk_attention_with_k_at_least_t_equals_dense_causal(reference, length):
    """One layer with k = L: on L tokens it runs dense causal SDPA; on L + 1 tokens it runs the
    indexer/top-k path, where rows 0..L-1 have t + 1 <= k. Both must agree on those rows."""
    torch.manual_seed(0)
    layer = reference.SparseAttention(128, 4, top_k=length).double()
    x = torch.randn(2, length + 1, 128, dtype=torch.float64, requires_grad=True)
    cos, sin = (t.double() for t in reference.rope_tables(length + 1, 32))
    y_dense, _ = layer(x[:, :length], cos[:length], sin[:length])
    y_sparse, aux = layer(x, cos, sin)
    assert aux.item() >= 0
    torch.testing.assert_close(y_sparse[:, :length], y_dense, **FP32_SOFTMAX)
    g_dense = torch.autograd.grad(y_dense.sum(), x)[0]
    g_sparse = torch.autograd.grad(y_sparse[:, :length].sum(), x)[0]
    torch.testing.assert_close(g_sparse, g_dense, **FP32_SOFTMAX)


def test_indexer_receives_gradient_in_one_step(reference):
    model = make(reference)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (2, T + 1))
    out, aux = model(ids[:, :-1])
    loss = F.cross_entropy(out.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)) + aux
    assert aux.item() > 0
    loss.backward()
    for i, k in enumerate(model.layer_top_k):
        if k < T:  # dense layers (k >= T) keep every past key and never consult their indexer
            for name, p in model.blocks[i].attn.indexer.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"layer {i} indexer.{name}"
    before = model.blocks[1].attn.indexer.q.weight.clone()
    opt.step()
    assert not torch.equal(before, model.blocks[1].attn.indexer.q.weight)


def test_indexer_alignment_does_not_touch_main_weights(reference, monkeypatch):
    """The KL target and the indexer's input are detached: the alignment loss trains only the
    indexers (the MoE balance loss is switched off to isolate it)."""
    monkeypatch.setattr(reference, "MOE_BALANCE_WEIGHT", 0.0)
    model = make(reference)
    _, aux = model(torch.randint(0, VOCAB, (2, T)))
    aux.backward()
    touched = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched and all(".indexer." in name for name in touched), sorted(touched)


def test_batch_independence_and_no_state(reference):
    model = make(reference).eval()
    ids = torch.randint(0, VOCAB, (4, T))
    batch = logits(model, ids)
    alone = logits(model, ids[2:3])
    torch.testing.assert_close(alone[0], batch[2], rtol=0, atol=1e-5)
    assert torch.equal(logits(model, ids), batch), "two identical calls differ"
    model.train()
    assert torch.equal(logits(model, ids), batch), "train and eval mode differ without dropout"


def test_parameter_count_and_flops_match_spec(reference):
    """The spec's reference figures are what the judge measures of initial_program.py: elements of
    the state dict, eval forward FLOPs per token, and the FLOPs of one whole training step."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.judge.budget import parameter_counts
    from benchmark.spec import SPEC
    from benchmark.worker.train import default_optimizer, loss_of

    torch.manual_seed(SPEC.seed)
    model = reference.build_model(SPEC.model_config())
    counts = parameter_counts(model.state_dict(), SPEC.vocab_size)
    assert counts["total"] == SPEC.reference_params == 14_307_968
    assert counts["embedding"] == 2 * SPEC.vocab_size * SPEC.hidden_size  # embedding + untied head
    ids = torch.randint(0, SPEC.vocab_size, (SPEC.batch_size, SPEC.seq_len + 1))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(ids[:1, :-1])
    assert counter.get_total_flops() // SPEC.seq_len == SPEC.reference_flops_per_token
    model.train()
    optimizer = default_optimizer(model, SPEC)
    with FlopCounterMode(display=False) as counter:
        logits, aux = model(ids[:, :-1])
        (loss_of(logits, ids[:, 1:]) + aux).backward()
        optimizer.step()
    assert counter.get_total_flops() == SPEC.reference_step_flops
