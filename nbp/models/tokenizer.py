"""MAGVITv2-style causal 3D CNN video tokenizer with FSQ (levels [8,8,8,5,5,5] = 64,000 codes).

The module layout (`encoder_layers.N`, `decoder_layers.N`, `.fn.K`, `.residual_fn.0.conv`) is the official
NBP release's, so its checkpoints load after stripping their `module.` prefix. Semantics follow it too:
causal convolutions with replicate padding (2 frames in front, 1 pixel each side), GroupNorm per frame,
Swish with a learned beta, DepthToSpace upsampling that drops the first `tb - 1` frames.

Activations live in channels-last-3d layout, (B, T, H, W, C) in memory: per-frame GroupNorm is then a
free view of a channels-last 2D batch, and bf16 convolutions run on the fast oneDNN (AMX) kernels.

Encoder (preset `nbp-magvit2`): conv_in, then per stage `num_res_blocks` residual units and a strided
conv between stages ((1,2,2), (2,2,2), (2,2,2)), then `mid_res_blocks` units, GroupNorm, Swish, 1x1 conv
to 6 channels. The decoder mirrors it with conv + DepthToSpace upsampling.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from nbp.config import InputError
from nbp.models.pretrained import Pretrained
from nbp.models.quantizer import BoundedFSQ
from nbp.settings.models import TokenizerConfig

CHANNELS_LAST = torch.channels_last_3d


class CausalConv3d(nn.Module):
    """Conv3d padded causally: replicate-pad `kt - 1` frames in front and `k // 2` pixels on each side."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=(1, 1, 1),
                 temporal_kernel: int | None = None):
        super().__init__()
        kt = kernel_size if temporal_kernel is None else temporal_kernel
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kernel_size, kernel_size), stride=stride)
        kt, kh, kw = self.conv.kernel_size
        self.padding = (kw // 2, kw // 2, kh // 2, kh // 2, 2 * (kt // 2), 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = causal_replicate_pad(x, self.padding[4], self.padding[2], self.padding[0])
        return self.conv(x)


def causal_replicate_pad(x: torch.Tensor, front: int, ph: int, pw: int) -> torch.Tensor:
    """F.pad(x, (pw, pw, ph, ph, front, 0), mode="replicate"), written into a channels-last buffer.

    One copy of x plus thin borders; `F.pad` on a channels-last bf16 tensor costs several full copies.
    """
    b, c, t, h, w = x.shape
    out = torch.empty((b, c, front + t, h + 2 * ph, w + 2 * pw), dtype=x.dtype, device=x.device,
                      memory_format=CHANNELS_LAST)
    body = out[:, :, front:]
    body[:, :, :, ph:ph + h, pw:pw + w] = x
    body[:, :, :, ph:ph + h, :pw] = x[..., :1]
    body[:, :, :, ph:ph + h, pw + w:] = x[..., -1:]
    body[:, :, :, :ph] = body[:, :, :, ph:ph + 1]  # top rows, corners included
    body[:, :, :, ph + h:] = body[:, :, :, ph + h - 1:ph + h]
    out[:, :, :front] = out[:, :, front:front + 1]  # the first frame, repeated in front
    return out


class Swish(nn.Module):
    """x * sigmoid(beta * x) with a learned per-channel beta."""

    def __init__(self, channels: int):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


def frame_group_norm(x: torch.Tensor, groups: int, weight, bias, eps: float) -> torch.Tensor:
    """GroupNorm of every frame on its own: statistics over (C/groups, H, W) per (batch, frame)."""
    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*T, C, H, W), a view in channels-last
    frames = F.group_norm(frames, groups, weight, bias, eps)
    return frames.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)


def norm_swish(x: torch.Tensor, norm: nn.GroupNorm, swish: Swish) -> torch.Tensor:
    """swish(norm(x)) in three passes over memory instead of six.

    Swish's beta is folded into the norm's affine: with y = norm(x), y * sigmoid(beta y) = silu(beta y) / beta.
    """
    beta = swish.beta.view(-1)
    y = frame_group_norm(x, norm.num_groups, norm.weight * beta, norm.bias * beta, norm.eps)
    inverse_beta = (1 / swish.beta).to(y.dtype)  # in y's dtype: a bf16 * fp32 product would copy y twice
    if torch.is_grad_enabled():  # autograd needs silu's input
        return F.silu(y) * inverse_beta
    return F.silu(y, inplace=True).mul_(inverse_beta)


class ResidualUnit(nn.Module):
    """fn(x) + res(x); fn = [GroupNorm, Swish, CausalConv3d, GroupNorm, Swish, CausalConv3d]."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, kt: int = 3):
        super().__init__()
        conv = lambda i, o: CausalConv3d(i, o, 3, temporal_kernel=kt)  # noqa: E731
        self.fn = nn.Sequential(
            nn.GroupNorm(groups, in_channels), Swish(in_channels), conv(in_channels, out_channels),
            nn.GroupNorm(groups, out_channels), Swish(out_channels), conv(out_channels, out_channels),
        )
        self.residual_fn = (nn.Sequential(CausalConv3d(in_channels, out_channels, kernel_size=1))
                            if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fn[2](norm_swish(x, self.fn[0], self.fn[1]))
        h = self.fn[5](norm_swish(h, self.fn[3], self.fn[4]))
        # The conv output is not needed by autograd, so the residual can be added in place.
        return h.add_(self.residual_fn(x))


class DepthToSpace(nn.Module):
    """(B, C*tb*hb*wb, T, H, W) -> (B, C, T*tb, H*hb, W*wb), dropping the first tb - 1 frames (causality)."""

    def __init__(self, tb: int, hb: int, wb: int):
        super().__init__()
        self.factors = (tb, hb, wb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tb, hb, wb = self.factors
        b, c, t, h, w = x.shape
        c_out = c // (tb * hb * wb)
        # The official channel order is (tb, hb, wb, C'): keep it so its checkpoints decode identically.
        x = x.permute(0, 2, 3, 4, 1).reshape(b, t, h, w, tb, hb, wb, c_out)
        x = x.permute(0, 1, 4, 2, 5, 3, 6, 7)  # (B, T, tb, H, hb, W, wb, C')
        x = x.reshape(b, t * tb, h * hb, w * wb, c_out).permute(0, 4, 1, 2, 3)  # (B, C', T', H', W') channels-last
        return x[:, :, tb - 1:]


def build_encoder(cfg: TokenizerConfig) -> nn.ModuleList:
    ch, groups, kt = cfg.channels, cfg.norm_groups, cfg.temporal_kernel
    layers: list[nn.Module] = [CausalConv3d(cfg.in_channels, ch[0], temporal_kernel=kt)]
    width = ch[0]
    for stage, out in enumerate(ch):
        for _ in range(cfg.num_res_blocks):
            layers.append(ResidualUnit(width, out, groups, kt))
            width = out
        if stage < len(ch) - 1:
            stride = (2 if cfg.temporal_downsample[stage] else 1, 2, 2)
            layers.append(CausalConv3d(width, width, stride=stride, temporal_kernel=kt))
    layers += [ResidualUnit(width, width, groups, kt) for _ in range(cfg.mid_res_blocks)]
    layers += [nn.GroupNorm(groups, width), Swish(width), nn.Conv3d(width, len(cfg.fsq_levels), 1)]
    return nn.ModuleList(layers)


def build_decoder(cfg: TokenizerConfig) -> nn.ModuleList:
    ch, groups, kt = cfg.channels, cfg.norm_groups, cfg.temporal_kernel
    width = ch[-1]
    layers: list[nn.Module] = [CausalConv3d(len(cfg.fsq_levels), width, temporal_kernel=kt)]
    layers += [ResidualUnit(width, width, groups, kt) for _ in range(cfg.mid_res_blocks)]
    for stage in reversed(range(len(ch))):
        for _ in range(cfg.num_res_blocks):
            layers.append(ResidualUnit(width, ch[stage], groups, kt))
            width = ch[stage]
        if stage > 0:
            tb = 2 if cfg.temporal_downsample[stage - 1] else 1
            layers += [CausalConv3d(width, width * tb * 4, temporal_kernel=kt), DepthToSpace(tb, 2, 2)]
    layers += [nn.GroupNorm(groups, width), Swish(width), CausalConv3d(width, cfg.in_channels, temporal_kernel=kt)]
    return nn.ModuleList(layers)


def _run_with_head(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The layers in order, the closing GroupNorm + Swish fused."""
    *body, norm, swish, conv_out = layers
    for layer in body:
        x = layer(x)
    return conv_out(norm_swish(x, norm, swish))


class VideoTokenizer(Pretrained, nn.Module):
    """Causal video tokenizer: (B, 3, 1 + 4k, H, W) in [0, 1] <-> (B, 1 + k, H/8, W/8) FSQ indices."""

    kind = "tokenizer"
    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder_layers = build_encoder(config)
        self.decoder_layers = build_decoder(config)
        self.quantizer = BoundedFSQ(config.fsq_levels, bound=config.fsq_bound)
        # Channels-last weights let oneDNN/cuDNN skip a reorder on every call (2x on the 512->4096 conv).
        self.to(memory_format=CHANNELS_LAST)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def encode(self, video: torch.Tensor, quantize: bool = True):
        """video (B, 3, T, H, W) in [0, 1] -> (codes (B, 6, T', h, w) in [-1, 1], indices (B, T', h, w) int32).

        With `quantize=False`, returns the continuous latents (B, 6, T', h, w) before FSQ.
        """
        self._check_video(video)
        z = _run_with_head(self.encoder_layers, video.contiguous(memory_format=CHANNELS_LAST))
        z = z.float().contiguous()
        if not quantize:
            return z
        codes, indices = self.quantizer(z)
        return codes, indices

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, 6, T', h, w) -> video (B, 3, 1 + (T'-1)*4, 8h, 8w), not clamped."""
        x = _run_with_head(self.decoder_layers, codes.contiguous(memory_format=CHANNELS_LAST))
        return x.contiguous()

    def decode_from_code_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, T', h, w), or (B, T'*h*w) with h = w = resolution / 8 -> video (B, 3, T, H, W)."""
        indices = self._check_indices(indices)
        codes = self.quantizer.indices_to_codes(indices)  # (B, 6, T', h, w)
        return self.decode(codes.to(self.decoder_layers[0].conv.weight.dtype))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction through the quantizer (straight-through gradients), for training."""
        codes, _ = self.encode(video)
        return self.decode(codes)

    def _check_video(self, video: torch.Tensor) -> None:
        if not torch.is_tensor(video) or video.ndim != 5:
            shape = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
            raise InputError(f"video must be a tensor (B, 3, T, H, W), got {shape}")
        _, c, t, h, w = video.shape
        cfg = self.config
        if c != cfg.in_channels:
            raise InputError(f"video has {c} channels in dim 1, expected {cfg.in_channels} (layout B, C, T, H, W)")
        if (t - 1) % cfg.temporal_factor:
            raise InputError(f"video has {t} frames; this tokenizer needs 1 + {cfg.temporal_factor}k "
                             f"(e.g. {1 + cfg.temporal_factor * max(1, (t - 1) // cfg.temporal_factor)})")
        if h % cfg.spatial_factor or w % cfg.spatial_factor:
            raise InputError(f"frame size {h}x{w} must be divisible by {cfg.spatial_factor}")
        if not video.is_floating_point():
            raise InputError(f"video must be float in [0, 1], got {video.dtype}")
        low, high = video.min().item(), video.max().item()
        if low < -0.5 or high > 1.5:
            warnings.warn(f"video values span [{low:.3g}, {high:.3g}]; the tokenizer expects [0, 1] "
                          "(uint8 frames: divide by 255)", stacklevel=3)

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.is_floating_point():
            raise InputError(f"indices must be integers, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise InputError(f"indices must lie in [0, {self.codebook_size}), got "
                             f"[{indices.min().item()}, {indices.max().item()}]")
        if indices.ndim == 4:
            return indices
        if indices.ndim != 2:
            raise InputError(f"indices must be (B, T', h, w) or flattened (B, T'*h*w), got {tuple(indices.shape)}")
        side = self.config.resolution // self.config.spatial_factor
        if indices.shape[1] % (side * side):
            raise InputError(f"{indices.shape[1]} flattened indices do not fill {side}x{side} latent frames "
                             f"(resolution {self.config.resolution}); pass (B, T', h, w) for other sizes")
        return indices.view(indices.shape[0], -1, side, side)
