"""Writes tests/data/torch/: small official-architecture PyTorch generators and their outputs.

Run by hand when the fixtures need remaking (the tests and CI do not have PyTorch):

    pip install torch==2.13.0
    python tests/make_torch_fixtures.py

The fixtures in the repository were made with PyTorch 2.13.0+cpu (the version is also stored in
every .npz as `torch_version`). The networks below copy the structure of the official
junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py` (ResnetGenerator, ResnetBlock,
UnetGenerator, UnetSkipConnectionBlock) with affine-free InstanceNorm, so their state_dict keys
are those of the official files, at small widths. Files:

- resnet6_legacy.pth: resnet_6blocks, ngf 4, in the legacy (non-zip) format of PyTorch < 1.6,
  with InstanceNorm running_mean/running_var/num_batches_tracked keys like the official files
  that PyTorch 0.4 saved (the official loader deletes them; they must not change the outputs).
- resnet9_zip.pth: resnet_9blocks, ngf 2, in the zip format.
- resnet6_dropout.pth: resnet_6blocks with dropout (second block conv at conv_block.6), ngf 2,
  zip format.
- unet128_legacy.pth: unet_128, ngf 1 (its 128 x 128 reference output dominates the size anyway),
  legacy format.
- patchgan_basic.npz: the official NLayerDiscriminator (70x70 PatchGAN, ndf 4), its conv weights,
  an input and its logits (`write_patchgan`).

Next to each, `<name>.npz` holds uint8 inputs `x_even` (a multiple of the generator's size
multiple) and `x_odd` (not a multiple), both [1, H, W, 3], and the eval-mode PyTorch outputs
`y_even`, `y_odd` (float32 [1, H, W, 3]) for the inputs `x / 127.5 - 1`. The odd-size output is
computed the way `inference.pad_run_crop` translates: reflect-padded (centred, by folding
indices) up to the size multiple, run, cropped back.
"""

import functools
import os

import numpy as np
import torch
from torch import nn

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch")


# -- the official networks (structure of models/networks.py) ----------------------------------


class ResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, use_dropout, use_bias):
        super().__init__()
        block = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            block += [nn.Dropout(0.5)]
        block += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
        ]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, norm_layer, use_dropout, n_blocks):
        super().__init__()
        use_bias = norm_layer.func == nn.InstanceNorm2d
        model = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * 4, norm_layer, use_dropout, use_bias)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(
                    ngf * mult,
                    ngf * mult // 2,
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=use_bias,
                ),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    def __init__(
        self,
        outer_nc,
        inner_nc,
        input_nc=None,
        submodule=None,
        outermost=False,
        innermost=False,
        norm_layer=None,
        use_dropout=False,
    ):
        super().__init__()
        self.outermost = outermost
        use_bias = norm_layer.func == nn.InstanceNorm2d
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias
            )
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf, norm_layer, use_dropout=False):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm_layer=norm_layer, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(
            output_nc,
            ngf,
            input_nc=input_nc,
            submodule=block,
            outermost=True,
            norm_layer=norm_layer,
        )

    def forward(self, x):
        return self.model(x)


# -- references -------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """The official 70x70 PatchGAN (NLayerDiscriminator) with affine-free instance norm."""

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.InstanceNorm2d):
        super().__init__()
        use_bias = norm_layer == nn.InstanceNorm2d or (
            isinstance(norm_layer, functools.partial) and norm_layer.func == nn.InstanceNorm2d
        )
        kw, padw = 4, 1
        sequence = [nn.Conv2d(input_nc, ndf, kw, 2, padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, 2, padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        sequence += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, 1, padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
        ]
        sequence += [nn.Conv2d(ndf * nf_mult, 1, kw, 1, padw)]
        self.model = nn.Sequential(*sequence)

    def forward(self, x):
        return self.model(x)


@torch.no_grad()
def write_patchgan():
    """patchgan_basic.npz: the official PatchGAN (ndf 4) weights, an input and its logits.

    Keys: `kernel_<i>` (PyTorch layout [out, in, kh, kw]) and `bias_<i>` of the i-th Conv2d in
    order, `x` [1, 70, 70, 3] float32 in [-1, 1] and `y` [1, 6, 6, 1] float32 logits.
    """
    torch.manual_seed(5)
    instance = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = NLayerDiscriminator(3, ndf=4, n_layers=3, norm_layer=instance).eval()
    x = torch.rand(1, 3, 70, 70, generator=torch.Generator().manual_seed(5)) * 2 - 1
    arrays = {"torch_version": np.array(torch.__version__), "x": x.numpy().transpose(0, 2, 3, 1)}
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for i, conv in enumerate(convs):
        arrays[f"kernel_{i}"] = conv.weight.numpy()
        arrays[f"bias_{i}"] = conv.bias.numpy()
    arrays["y"] = net(x).numpy().transpose(0, 2, 3, 1)
    np.savez_compressed(os.path.join(OUT_DIR, "patchgan_basic.npz"), **arrays)
    print(f"patchgan_basic: {len(convs)} convs, logits {arrays['y'].shape}")


def mirror_indices(size, before, after):
    """numpy twin of `inference.mirror_indices`: reflect (edge not repeated), folding wide pads."""
    positions = np.arange(-before, size + after)
    period = max(2 * (size - 1), 1)
    folded = np.mod(positions, period)
    return np.where(folded >= size, period - folded, folded)


def padded_size(size, multiple):
    """numpy twin of `inference.padded_size`."""
    return max((size + multiple - 1) // multiple * multiple, 8)


@torch.no_grad()
def translate(net, images_uint8, multiple):
    """What `inference.pad_run_crop` computes, with the PyTorch module: [1, H, W, 3] float32."""
    x = images_uint8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    height, width = x.shape[1:3]
    pad_h, pad_w = padded_size(height, multiple) - height, padded_size(width, multiple) - width
    top, left = pad_h // 2, pad_w // 2
    x = x[:, mirror_indices(height, top, pad_h - top)]
    x = x[:, :, mirror_indices(width, left, pad_w - left)]
    y = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    y = y.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(y[:, top : top + height, left : left + width], np.float32)


def write(name, net, multiple, even, odd, legacy, seed, running_stats=False):
    net.eval()
    state_dict = net.state_dict()
    if running_stats:
        # Like the files PyTorch 0.4 saved: statistics an affine-free InstanceNorm never uses.
        generator = torch.Generator().manual_seed(seed)
        for key, value in state_dict.items():
            if key.endswith("running_mean"):
                value.copy_(torch.randn(value.shape, generator=generator))
            elif key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif key.endswith("num_batches_tracked"):
                value.fill_(200)
        for module in net.modules():  # the reference uses instance statistics, as officially
            if isinstance(module, nn.InstanceNorm2d):
                module.track_running_stats = False
    path = os.path.join(OUT_DIR, f"{name}.pth")
    torch.save(state_dict, path, _use_new_zipfile_serialization=not legacy)

    rng = np.random.default_rng(seed)
    arrays = {"torch_version": np.array(torch.__version__)}
    for tag, (height, width) in (("even", even), ("odd", odd)):
        x = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
        arrays[f"x_{tag}"] = x
        arrays[f"y_{tag}"] = translate(net, x, multiple)
    np.savez_compressed(os.path.join(OUT_DIR, f"{name}.npz"), **arrays)
    y = arrays["y_even"]
    print(
        f"{name}: {len(state_dict)} tensors, "
        f"{sum(v.numel() for k, v in state_dict.items() if 'running' not in k)} values, "
        f"output std {y.std():.3f}, |y| max {np.abs(y).max():.3f}"
    )


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    instance = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    tracked = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=True)

    torch.manual_seed(1)
    net = ResnetGenerator(3, 3, 4, tracked, use_dropout=False, n_blocks=6)
    write("resnet6_legacy", net, 4, (16, 16), (13, 18), legacy=True, seed=1, running_stats=True)

    torch.manual_seed(2)
    net = ResnetGenerator(3, 3, 2, instance, use_dropout=False, n_blocks=9)
    write("resnet9_zip", net, 4, (16, 20), (15, 14), legacy=False, seed=2)

    torch.manual_seed(3)
    net = ResnetGenerator(3, 3, 2, instance, use_dropout=True, n_blocks=6)
    write("resnet6_dropout", net, 4, (12, 16), (10, 9), legacy=False, seed=3)

    torch.manual_seed(4)
    net = UnetGenerator(3, 3, 7, 1, instance)
    write("unet128_legacy", net, 128, (128, 128), (20, 27), legacy=True, seed=4)

    write_patchgan()


if __name__ == "__main__":
    main()
