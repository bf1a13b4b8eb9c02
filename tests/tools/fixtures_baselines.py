#!/usr/bin/python3
"""fixtures_baselines.py — PyTorch reference cases for the denoising baselines (DnCNN, the conv
autoencoder: lua/cunet/models/dncnn.lua, convae.lua), written to tests/fixtures/baselines.lua.

    /usr/bin/python3 tests/tools/fixtures_baselines.py

Each case: a small model with PyTorch's default initialisation, its state dict (the same names as
cunet's modules: nn.Sequential children 0, 1, ...), an input batch and the output in eval mode
(running statistics made non-trivial by a few training-mode forwards first) and in training mode
(batch statistics), and the parameter counts of the full-size models.
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402


class DnCNN(nn.Module):
    def __init__(self, channels, depth, features):
        super().__init__()
        layers = [nn.Conv2d(channels, features, 3, padding=1, bias=False), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), nn.ReLU()]
        layers.append(nn.Conv2d(features, channels, 3, padding=1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.net(x)


class ConvAE(nn.Module):
    def __init__(self, channels, widths):
        super().__init__()
        chans = [channels] + list(widths)
        down, up = [], []
        for i in range(len(widths)):
            down += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.ReLU()]
        for i in range(len(widths), 0, -1):
            up.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 3, stride=2, padding=1, output_padding=1))
            if i > 1:
                up.append(nn.ReLU())
        self.encoder, self.decoder = nn.Sequential(*down), nn.Sequential(*up)
        self.multiple = 2 ** len(widths)

    def forward(self, x):
        h, w = x.shape[2:]
        m = self.multiple
        ph, pw = (m - h % m) % m, (m - w % m) % m
        y = self.decoder(self.encoder(nn.functional.pad(x, (0, pw, 0, ph))))
        return y[:, :, :h, :w]


def count(model):
    return sum(p.numel() for p in model.parameters())


def main():
    fx = Fixture("baselines", seed=1313)
    cases = [
        ("dncnn_c1_d5_f8", "dncnn", {"in_channels": 1, "depth": 5, "features": 8}, DnCNN(1, 5, 8), (2, 1, 12, 10)),
        ("dncnn_c3_d4_f6", "dncnn", {"in_channels": 3, "depth": 4, "features": 6}, DnCNN(3, 4, 6), (2, 3, 9, 11)),
        ("convae_c1_20x20", "convae", {"in_channels": 1, "widths": [4, 8, 8, 16]}, ConvAE(1, [4, 8, 8, 16]), (2, 1, 20, 20)),
        ("convae_c3_16x32", "convae", {"in_channels": 3, "widths": [4, 6, 8, 8]}, ConvAE(3, [4, 6, 8, 8]), (2, 3, 16, 32)),
    ]
    for name, module, config, model, shape in cases:
        x = torch.rand(shape)
        model.train()
        for _ in range(3):
            model(torch.rand(shape))  # running statistics away from 0 / 1
        train_out = model(x)
        model.eval()
        eval_out = model(x)
        state = [[k, v] for k, v in model.state_dict().items()]  # dotted names: a list of pairs
        fx.add(name=name, module=module, config=config, state=state, input=x, train_output=train_out,
               eval_output=eval_out, parameters=count(model))
    fx.add(name="counts", dncnn_c3=count(DnCNN(3, 20, 64)), dncnn_c1=count(DnCNN(1, 20, 64)),
           convae_c1=count(ConvAE(1, [64, 128, 256, 512])), convae_c3=count(ConvAE(3, [64, 128, 256, 512])))
    fx.write(os.path.basename(__file__))


if __name__ == "__main__":
    main()
