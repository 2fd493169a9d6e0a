"""Show, Attend and Tell (Xu et al. 2015) with the module and parameter names of sgrvinod's
"a-PyTorch-Tutorial-to-Image-Captioning", so that its state_dicts load unchanged.

Serving splits the decoder into two exportable pieces: ``EncodeInit`` (image -> flattened features,
the attention's image projection and the LSTM's initial state, all computed once per image) and
``DecoderStep`` (one beam-search step over any number of hypotheses). Precomputing the image
projection ``encoder_att(encoder_out)`` matters: it is ~95% of a ResNet-101 step's FLOPs and the
reference recomputes it at every step for every beam.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from zooserve.specs import ExportTarget

MAX_IMAGES = 256
MAX_ROWS = 4096  # images x beams in one step
START, END, PAD, UNK = "<start>", "<end>", "<pad>", "<unk>"

_RESNETS = {  # torchvision name -> (block, layers); the trunk is its children minus avgpool/fc
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


@dataclass(frozen=True)
class SatConfig:
    """Architecture of one captioner; stored in our checkpoints and the build metadata."""

    vocab_size: int
    backbone: str = "resnet101"  # a torchvision resnet, "resnet-basic-1-1-1-1"-style, or "conv"
    encoded_size: int = 14
    attention_dim: int = 512
    embed_dim: int = 512
    decoder_dim: int = 512
    dropout: float = 0.5
    conv_widths: tuple[int, ...] = (32, 64, 128)  # "conv" backbone only
    conv_side: int | None = None  # "conv" backbone: resample the input to this side first
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def encoder_dim(self) -> int:
        if self.backbone == "conv":
            return self.conv_widths[-1]
        block, _ = resnet_layout(self.backbone)
        return 512 * (4 if block == "bottleneck" else 1)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "conv_widths": list(self.conv_widths)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SatConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**{**d, "conv_widths": tuple(d.get("conv_widths", (32, 64, 128)))})


def resnet_layout(backbone: str) -> tuple[str, tuple[int, ...]]:
    if backbone in _RESNETS:
        return _RESNETS[backbone]
    m = re.fullmatch(r"resnet-(basic|bottleneck)((?:-\d+){4})", backbone)
    if not m:
        raise ValueError(f"unknown captioner backbone {backbone!r}")
    return m.group(1), tuple(int(n) for n in m.group(2).strip("-").split("-"))


class CoordChannels(nn.Module):
    """Appends x/y coordinate planes: the small demo trunk has too little receptive field and padding
    to know where a shape is, and its captions are about positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([x, xs, ys], dim=1)


def conv_trunk(widths: tuple[int, ...], side: int | None) -> nn.Sequential:
    """Small CNN for the demo and tests: the first two convolutions halve the resolution."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d((side, side))] if side else []
    layers.append(CoordChannels())
    cin = 5
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(cin, w, 3, stride=2 if i < 2 else 1, padding=1, bias=False), nn.BatchNorm2d(w)]
        layers.append(nn.ReLU(inplace=True))
        cin = w
    return nn.Sequential(*layers)


def build_trunk(cfg: SatConfig) -> nn.Module:
    if cfg.backbone == "conv":
        return conv_trunk(cfg.conv_widths, cfg.conv_side)
    block, layers = resnet_layout(cfg.backbone)
    net = ResNet(BasicBlock if block == "basic" else Bottleneck, list(layers))  # random init, no download
    return nn.Sequential(*list(net.children())[:-2])


class Encoder(nn.Module):
    """CNN trunk + adaptive pool to encoded_size x encoded_size; output (N, S, S, encoder_dim)."""

    def __init__(self, cfg: SatConfig) -> None:
        super().__init__()
        self.enc_image_size = cfg.encoded_size
        self.resnet = build_trunk(cfg)
        self.adaptive_pool = nn.AdaptiveAvgPool2d((cfg.encoded_size, cfg.encoded_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adaptive_pool(self.resnet(images)).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Soft (additive) attention over the encoded pixels."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.relu = nn.ReLU()
        self.softmax = nn.Softmax(dim=1)

    def forward(
        self, encoder_out: torch.Tensor, decoder_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attend(encoder_out, self.encoder_att(encoder_out), decoder_hidden)

    def attend(
        self, encoder_out: torch.Tensor, att1: torch.Tensor, decoder_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention with the image projection ``att1 = encoder_att(encoder_out)`` precomputed."""
        att2 = self.decoder_att(decoder_hidden)
        alpha = self.softmax(self.full_att(self.relu(att1 + att2.unsqueeze(1))).squeeze(2))
        return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha


class DecoderWithAttention(nn.Module):
    """LSTMCell over [word embedding; gated attention context]; init state from the mean feature."""

    def __init__(
        self,
        attention_dim: int,
        embed_dim: int,
        decoder_dim: int,
        vocab_size: int,
        encoder_dim: int = 2048,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.encoder_dim, self.attention_dim, self.embed_dim = encoder_dim, attention_dim, embed_dim
        self.decoder_dim, self.vocab_size = decoder_dim, vocab_size
        self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.sigmoid = nn.Sigmoid()
        self.fc = nn.Linear(decoder_dim, vocab_size)
        self.embedding.weight.data.uniform_(-0.1, 0.1)
        self.fc.bias.data.fill_(0)
        self.fc.weight.data.uniform_(-0.1, 0.1)

    def init_hidden_state(self, encoder_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def step(
        self,
        encoder_out: torch.Tensor,
        att1: torch.Tensor,
        words: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decode step (all row-aligned): -> (scores before softmax, h, c, alpha)."""
        awe, alpha = self.attention.attend(encoder_out, att1, h)
        awe = self.sigmoid(self.f_beta(h)) * awe
        h, c = self.decode_step(torch.cat([self.embedding(words), awe], dim=1), (h, c))
        return self.fc(self.dropout(h)), h, c, alpha

    def forward(self, encoder_out: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing over padded captions (N, T) -> scores (N, T-1, V), alphas (N, T-1, P)."""
        enc = encoder_out.flatten(1, 2) if encoder_out.dim() == 4 else encoder_out
        att1 = self.attention.encoder_att(enc)
        h, c = self.init_hidden_state(enc)
        scores, alphas = [], []
        for t in range(captions.shape[1] - 1):
            s, h, c, alpha = self.step(enc, att1, captions[:, t], h, c)
            scores.append(s)
            alphas.append(alpha)
        return torch.stack(scores, 1), torch.stack(alphas, 1)


class EncodeInit(nn.Module):
    """Exported "encoder": images -> (features (N, P, D), att1 (N, P, A), h0, c0)."""

    def __init__(self, encoder: Encoder, decoder: DecoderWithAttention) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = (
            self.encoder(images).flatten(1, 2).contiguous()
        )  # a strided view otherwise: compiled steps assume dense
        h, c = self.decoder.init_hidden_state(enc)
        return enc, self.decoder.attention.encoder_att(enc), h, c


class DecoderStep(nn.Module):
    """Exported "step": per-image features plus per-hypothesis state; ``rows`` maps each hypothesis
    to its image, so beams never copy their image's features. -> (log-probs (R, V), h, c, alpha (R, P))."""

    def __init__(self, decoder: DecoderWithAttention) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        enc: torch.Tensor,
        att1: torch.Tensor,
        rows: torch.Tensor,
        words: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        scores, h, c, alpha = self.decoder.step(
            enc.index_select(0, rows), att1.index_select(0, rows), words, h, c
        )
        return F.log_softmax(scores, dim=1), h, c, alpha


def build_captioner(cfg: SatConfig) -> tuple[Encoder, DecoderWithAttention]:
    dec = DecoderWithAttention(
        cfg.attention_dim, cfg.embed_dim, cfg.decoder_dim, cfg.vocab_size, cfg.encoder_dim, cfg.dropout
    )
    return Encoder(cfg), dec


def export_targets(encoder: Encoder, decoder: DecoderWithAttention, side: int) -> dict[str, ExportTarget]:
    """Dynamic batch on both: images for the encoder, images and hypotheses for the step."""
    encoder, decoder = encoder.eval(), decoder.eval()
    images = {0: ("images", 1, MAX_IMAGES)}
    rows = {0: ("rows", 1, MAX_ROWS)}
    p, d, a, hd = encoder.enc_image_size**2, decoder.encoder_dim, decoder.attention_dim, decoder.decoder_dim
    n, r = 2, 6  # sizes > 1 so that torch.export does not specialise them
    step_inputs = (
        torch.randn(n, p, d),
        torch.randn(n, p, a),
        torch.tensor([0, 0, 0, 1, 1, 1]),
        torch.randint(0, decoder.vocab_size, (r,)),
        torch.randn(r, hd),
        torch.randn(r, hd),
    )
    return {
        "encoder": ExportTarget(
            EncodeInit(encoder, decoder).eval(), (torch.randn(n, 3, side, side),), (images,)
        ),
        "step": ExportTarget(
            DecoderStep(decoder).eval(), step_inputs, (images, images, rows, rows, rows, rows)
        ),
    }


def tiny_config(vocab_size: int) -> SatConfig:
    return SatConfig(
        vocab_size=vocab_size,
        backbone="conv",
        conv_widths=(8, 16),
        attention_dim=16,
        embed_dim=16,
        decoder_dim=32,
    )


def caption_metadata(cfg: SatConfig, vocab: list[str], **facts: Any) -> dict[str, Any]:
    ids = {tok: vocab.index(tok) for tok in (START, END, PAD, UNK) if tok in vocab}
    return {
        "beam_size": 3,
        "max_length": 50,
        "length_norm": 0.0,
        "encoded_size": cfg.encoded_size,
        "special_tokens": ids,
        "config": cfg.to_json(),
        **facts,
    }
