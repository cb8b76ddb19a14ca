"""REACT's gated blocks, inserted into a frozen open_clip image tower.

A gated block sits before a host transformer layer of the image tower:

    x = x + tanh(α_attn) · Attn(LN1(x))
    x = x + tanh(α_mlp)  · MLP(LN2(x))

with its own LayerNorms, multi-head self-attention of the host's width and heads, an MLP of ratio 4
with the host's activation, and α = 0 at initialisation, so the customized model starts exactly
equal to the base model. Block weights are default-initialised, not copied from the host.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._manifests import UserError


class GatedBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 batch_first: bool = True):
        super().__init__()
        self.ln_1 = norm_layer(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=batch_first)
        self.ln_2 = norm_layer(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), act_layer(), nn.Linear(hidden, width))
        self.alpha_attn = nn.Parameter(torch.zeros(1))
        self.alpha_mlp = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + torch.tanh(self.alpha_attn) * self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + torch.tanh(self.alpha_mlp) * self.mlp(self.ln_2(x))


class ReactLayer(nn.Module):
    """A host layer with its gated block in front; called exactly like the host by open_clip's Transformer."""

    def __init__(self, gate: GatedBlock, host: nn.Module):
        super().__init__()
        self.gate = gate
        self.host = host
        self.checkpoint_gate = False

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        if self.checkpoint_gate and self.training and torch.is_grad_enabled():
            q_x = checkpoint(self.gate, q_x, attn_mask, use_reentrant=False)
        else:
            q_x = self.gate(q_x, attn_mask)
        return self.host(q_x, k_x, v_x, attn_mask=attn_mask)


def image_layers(model) -> nn.ModuleList:
    """The image tower's transformer layers of an open_clip ViT."""
    try:
        return model.visual.transformer.resblocks
    except AttributeError:
        raise UserError(f"{type(model).__name__}: gated blocks need an open_clip ViT image tower "
                         "(model.visual.transformer.resblocks); this model has none") from None


def default_k(n_layers: int) -> int:
    """REACT's choice: 6 blocks for 12- and 24-layer towers, 12 for 48 layers (bigG); half the tower when tiny."""
    if n_layers < 12:
        return max(1, n_layers // 2)
    return 6 if n_layers <= 32 else 12


def block_config(model, k: int | None = None) -> dict:
    """Where and what blocks go into this model: the checkpoint manifest's `blocks` entry."""
    layers = image_layers(model)
    host = layers[-1].host if isinstance(layers[-1], ReactLayer) else layers[-1]
    n = len(layers)
    k = default_k(n) if k is None else k
    if not 1 <= k <= n:
        raise UserError(f"--blocks must be between 1 and the {n} layers of the image tower, got {k}")
    width = host.ln_1.normalized_shape[0]
    act = type(host.mlp.gelu).__name__
    return {"k": k, "positions": list(range(n - k, n)), "width": width, "heads": host.attn.num_heads,
            "mlp_ratio": host.mlp.c_fc.out_features / width, "act": {"QuickGELU": "quick_gelu"}.get(act, act.lower())}


def insert_gated_blocks(model, k: int | None = None, seed: int | None = None) -> dict:
    """Put a fresh gated block before each of the last k image layers (in place); returns the block config."""
    config = block_config(model, k)
    layers = image_layers(model)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    for i in config["positions"]:
        host = layers[i]
        gate = GatedBlock(config["width"], config["heads"], config["mlp_ratio"], type(host.mlp.gelu),
                          type(host.ln_1), host.attn.batch_first)
        ref = next(host.parameters())
        layers[i] = ReactLayer(gate.to(device=ref.device, dtype=ref.dtype), host)
    if seed is not None:
        torch.random.set_rng_state(generator_state)
    return config


def gate_values(model) -> dict[str, float]:
    """tanh(α) of every gate, for logs: how far the blocks have opened."""
    out = {}
    for i, layer in enumerate(image_layers(model)):
        if isinstance(layer, ReactLayer):
            out[f"{i}.attn"] = float(torch.tanh(layer.gate.alpha_attn.detach()))
            out[f"{i}.mlp"] = float(torch.tanh(layer.gate.alpha_mlp.detach()))
    return out


def set_gradient_checkpointing(model, enabled: bool) -> None:
    for layer in image_layers(model):
        if isinstance(layer, ReactLayer):
            layer.checkpoint_gate = enabled
