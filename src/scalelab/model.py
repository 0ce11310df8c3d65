"""A GPT-style decoder, written to be read (after nanoGPT's model.py).

Pre-LayerNorm blocks, causal attention through scaled_dot_product_attention, a 4x GELU MLP,
tied input embedding and output head. `forward` optionally takes and returns a key/value
cache so that greedy decoding costs one single-token step per generated token.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .plan.shapes import GPTConfig, flops_per_token, param_counts  # noqa: F401 (re-exported)


# A cache holds, per layer, keys and values of shape (batch, n_head, positions, head_dim).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, steps, self.n_head, width // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if past is None or steps > 1:
            # Without a cache, or when a prompt is fed after cached positions, the new queries
            # see all cached positions and a causal triangle among themselves.
            offset = k.shape[2] - steps
            if offset == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                mask = torch.ones(steps, k.shape[2], dtype=torch.bool, device=x.device).tril(offset)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v)  # one new query attends to everything
        y = y.transpose(1, 2).contiguous().view(batch, steps, width)
        return self.proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, past=None):
        attn_out, present = self.attn(self.ln_1(x), past)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, present


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # std 0.02 everywhere: PyTorch's N(0, 1) embedding init yields denormals on CPU (5x slower).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Total trainable parameters, the tied head counted once."""
        return sum(p.numel() for p in self.parameters())

    def num_params_non_embedding(self) -> int:
        """Kaplan's N: everything but the token and position embedding tables."""
        return self.num_params() - self.tok_emb.weight.numel() - self.pos_emb.weight.numel()

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ):
        """Return (logits, loss, new_cache). loss is the mean cross-entropy when targets are given.

        With `cache`, `idx` holds only the new positions; positions continue after the cached ones.
        """
        start = 0 if cache is None else cache[0][0].shape[2]
        steps = idx.shape[1]
        if start + steps > self.cfg.context:
            raise ValueError(f"sequence of {start + steps} tokens exceeds the context of {self.cfg.context}")
        pos = torch.arange(start, start + steps, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, None if cache is None else cache[i])
            new_cache.append(present)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, new_cache
