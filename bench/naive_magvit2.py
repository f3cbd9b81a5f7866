"""A straightforward implementation of the same tokenizer, written the way the official code is.

Contiguous (B, C, T, H, W) tensors, `F.pad(mode="replicate")` before every conv, GroupNorm by reshaping to
(B*T, C, H, W) and back, Swish as x * sigmoid(beta * x). It is the baseline `bench/tokenizer.py` measures
nbp against; it loads the same state dict (keys are identical).
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from nbp.models.tokenizer import TokenizerConfig


class CausalConv(nn.Module):
    def __init__(self, a, b, k=3, stride=(1, 1, 1)):
        super().__init__()
        self.conv = nn.Conv3d(a, b, k, stride=stride)
        self.pad = (k // 2, k // 2, k // 2, k // 2, 2 * (k // 2), 0)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class GroupNormPerFrame(nn.GroupNorm):
    def forward(self, x):
        t = x.shape[2]
        x = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


class Swish(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1, 1))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


class Residual(nn.Module):
    def __init__(self, a, b, g):
        super().__init__()
        self.fn = nn.Sequential(GroupNormPerFrame(g, a), Swish(a), CausalConv(a, b),
                                GroupNormPerFrame(g, b), Swish(b), CausalConv(b, b))
        self.residual_fn = nn.Sequential(CausalConv(a, b, 1)) if a != b else nn.Identity()

    def forward(self, x):
        return self.fn(x) + self.residual_fn(x)


class DepthToSpace(nn.Module):
    def __init__(self, tb, hb, wb):
        super().__init__()
        self.f = (tb, hb, wb)

    def forward(self, x):
        tb, hb, wb = self.f
        b, c, t, h, w = x.shape
        x = x.view(b, tb, hb, wb, c // (tb * hb * wb), t, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
        x = x.reshape(b, c // (tb * hb * wb), t * tb, h * hb, w * wb)
        return x[:, :, tb - 1:]


class NaiveTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch, g, w = cfg.channels, cfg.norm_groups, cfg.channels[0]
        enc = [CausalConv(3, w)]
        for i, out in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                enc.append(Residual(w, out, g))
                w = out
            if i < len(ch) - 1:
                enc.append(CausalConv(w, w, stride=(2 if cfg.temporal_downsample[i] else 1, 2, 2)))
        enc += [Residual(w, w, g) for _ in range(cfg.mid_res_blocks)]
        enc += [GroupNormPerFrame(g, w), Swish(w), nn.Conv3d(w, 6, 1)]
        dec = [CausalConv(6, w)] + [Residual(w, w, g) for _ in range(cfg.mid_res_blocks)]
        for i in reversed(range(len(ch))):
            for _ in range(cfg.num_res_blocks):
                dec.append(Residual(w, ch[i], g))
                w = ch[i]
            if i > 0:
                tb = 2 if cfg.temporal_downsample[i - 1] else 1
                dec += [CausalConv(w, w * tb * 4), DepthToSpace(tb, 2, 2)]
        dec += [GroupNormPerFrame(g, w), Swish(w), CausalConv(w, 3)]
        self.encoder_layers, self.decoder_layers = nn.Sequential(*enc), nn.Sequential(*dec)

    def encode(self, video):
        return self.encoder_layers(video)

    def decode(self, codes):
        return self.decoder_layers(codes)
