"""Weight-only quantization of a loaded transformers model's Linear layers, with torch's own CPU kernels.

int8: torch's dynamic quantization (int8 weights per output channel, activations quantized on the fly).
int4: 4-bit weights in groups of INT4_GROUP_SIZE along the input dimension, each group with its own scale and zero
point (asymmetric, as GPTQ/AWQ-style weight-only int4 stores them), multiplied by torch's packed int4 kernel
(aten._weight_int4pack_mm_for_cpu) without materialising the dequantized weights. Activations keep the model's dtype.
"""

import torch

from harness.errors import ConfigError

INT4_GROUP_SIZE = 32
# Inner K tiles of the packed layout that torch's CPU int4 kernel reads.
INT4_INNER_K_TILES = 8
METHODS = ("int8", "int4")


class Int4Linear(torch.nn.Module):
    """y = x @ dequant(W).T + b, where dequant(W)[n, k] = (q[n, k] - 8) * scale[g, n] + zero[g, n], g = k // group."""

    def __init__(self, linear: torch.nn.Linear, group_size: int = INT4_GROUP_SIZE):
        super().__init__()
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        groups = weight.reshape(out_features, in_features // group_size, group_size)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = (high - low).clamp(min=1e-8) / 15
        q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(out_features, in_features)
        dtype = linear.weight.dtype
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, INT4_INNER_K_TILES))
        # (groups, out_features, 2): the layout the kernel takes; zero is the value that q = 8 stands for.
        self.register_buffer("scales_and_zeros",
                             torch.stack([scale, low + 8 * scale], -1).squeeze(-2).transpose(0, 1).contiguous()
                             .to(dtype))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size, self.scales_and_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def _int4(model: torch.nn.Module) -> torch.nn.Module:
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    for name, linear in targets:
        if linear.in_features % INT4_GROUP_SIZE:
            continue  # a width the groups do not divide stays in full precision
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int4Linear(linear))
    return model


def quantize(model: torch.nn.Module, method: str, device: str, dtype: str) -> torch.nn.Module:
    """The model with its Linear weights quantized by `method` (int8 or int4); CPU kernels only."""
    if device != "cpu":
        raise ConfigError(f"quantize: {method} uses torch's CPU kernels; this run's device is {device}")
    if method == "int8":
        if dtype != "fp32":
            raise ConfigError("quantize: int8 (torch's dynamic quantization) takes fp32 models only")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if method == "int4":
        return _int4(model)
    raise ConfigError(f"quantize: unknown method {method!r}; known: {', '.join(METHODS)}")
