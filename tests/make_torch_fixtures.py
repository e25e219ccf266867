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
- Community layouts (`write_community`), networks written here from the structure of their public
  code: the aitorzip/PyTorch-CycleGAN family (`FamilyGenerator`: one `model` Sequential, biases on
  every conv, residual Sequentials named `conv_block` or `block`, InstanceNorm2d affine or not)
  as aitorzip_block_affine_{legacy,zip}.pth (9 blocks, ngf 2), aitorzip_conv_block_affine.pth
  (6, ngf 3, zip), aitorzip_block.pth (6, ngf 2, affine-free, legacy); aladdinpersson's
  Machine-Learning-Collection CycleGAN (`NamedPartsGenerator`: initial, down_blocks, res_blocks,
  up_blocks, last; reflect-padded convs including the stride-2 ones) as
  aladdinpersson_{legacy,zip}.pth (9 blocks, ngf 2, affine-free) and aladdinpersson_affine.pth
  (6, ngf 2, zip). Affine norms get random weights (not 1 and 0).

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


# -- community layouts (structure of their public code, written here) ----------------------------


class FamilyResidualBlock(nn.Module):
    """A residual block of the aitorzip/PyTorch-CycleGAN family: pad, conv, norm, relu, pad,
    conv, norm in a Sequential named `conv_block` (the original) or `block` (forks)."""

    def __init__(self, channels, norm_layer, attribute):
        super().__init__()
        self.attribute = attribute
        setattr(
            self,
            attribute,
            nn.Sequential(
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, channels, 3),
                norm_layer(channels),
                nn.ReLU(inplace=True),
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, channels, 3),
                norm_layer(channels),
            ),
        )

    def forward(self, x):
        return x + getattr(self, self.attribute)(x)


class FamilyGenerator(nn.Module):
    """aitorzip/PyTorch-CycleGAN's Generator with the options its forks add (ngf, block name,
    InstanceNorm2d affine or not): every conv has a bias; one `model` Sequential."""

    def __init__(self, ngf, n_blocks, norm_layer, attribute):
        super().__init__()
        model = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            width = ngf * 2**i
            model += [
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                norm_layer(2 * width),
                nn.ReLU(True),
            ]
        model += [FamilyResidualBlock(4 * ngf, norm_layer, attribute) for _ in range(n_blocks)]
        for i in range(2):
            width = ngf * 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                norm_layer(width // 2),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class NamedConvBlock(nn.Module):
    """aladdinpersson's ConvBlock: `conv` = [Conv2d(padding_mode="reflect") or ConvTranspose2d,
    InstanceNorm2d, ReLU or Identity]."""

    def __init__(self, c_in, c_out, norm_layer, down=True, act=True, **kwargs):
        super().__init__()
        conv = (
            nn.Conv2d(c_in, c_out, padding_mode="reflect", **kwargs)
            if down
            else nn.ConvTranspose2d(c_in, c_out, **kwargs)
        )
        self.conv = nn.Sequential(
            conv, norm_layer(c_out), nn.ReLU(inplace=True) if act else nn.Identity()
        )

    def forward(self, x):
        return self.conv(x)


class NamedResidualBlock(nn.Module):
    def __init__(self, channels, norm_layer):
        super().__init__()
        self.block = nn.Sequential(
            NamedConvBlock(channels, channels, norm_layer, kernel_size=3, padding=1),
            NamedConvBlock(channels, channels, norm_layer, act=False, kernel_size=3, padding=1),
        )

    def forward(self, x):
        return x + self.block(x)


class NamedPartsGenerator(nn.Module):
    """aladdinpersson's CycleGAN Generator: initial, down_blocks, res_blocks, up_blocks, last;
    reflect-padded convs (the stride-2 ones too), biases everywhere, tanh after `last`."""

    def __init__(self, ngf, n_blocks, norm_layer):
        super().__init__()
        self.initial = nn.Sequential(
            nn.Conv2d(3, ngf, 7, stride=1, padding=3, padding_mode="reflect"),
            norm_layer(ngf),
            nn.ReLU(inplace=True),
        )
        self.down_blocks = nn.ModuleList(
            [
                NamedConvBlock(ngf, 2 * ngf, norm_layer, kernel_size=3, stride=2, padding=1),
                NamedConvBlock(2 * ngf, 4 * ngf, norm_layer, kernel_size=3, stride=2, padding=1),
            ]
        )
        self.res_blocks = nn.Sequential(
            *[NamedResidualBlock(4 * ngf, norm_layer) for _ in range(n_blocks)]
        )
        up = {"down": False, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}
        self.up_blocks = nn.ModuleList(
            [
                NamedConvBlock(4 * ngf, 2 * ngf, norm_layer, **up),
                NamedConvBlock(2 * ngf, ngf, norm_layer, **up),
            ]
        )
        self.last = nn.Conv2d(ngf, 3, 7, stride=1, padding=3, padding_mode="reflect")

    def forward(self, x):
        x = self.initial(x)
        for layer in self.down_blocks:
            x = layer(x)
        x = self.res_blocks(x)
        for layer in self.up_blocks:
            x = layer(x)
        return torch.tanh(self.last(x))


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


def write(name, net, multiple, even, odd, legacy, seed, running_stats=False, both=False):
    """`<name>.pth` (legacy or zip format; `both`: `<name>_legacy.pth` and `<name>_zip.pth`)
    and `<name>.npz` (inputs and PyTorch outputs)."""
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
    if both:
        for kind in ("legacy", "zip"):
            path = os.path.join(OUT_DIR, f"{name}_{kind}.pth")
            torch.save(state_dict, path, _use_new_zipfile_serialization=kind == "zip")
    else:
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
    write_community()


def _randomize_affine(net, seed):
    """Affine norms start at weight 1, bias 0, where a lost or swapped scale would not show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.InstanceNorm2d) and module.affine:
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return net


def write_community():
    """The community layouts, each in both pickle formats (one .npz of outputs per network)."""
    affine = functools.partial(nn.InstanceNorm2d, affine=True)
    instance = nn.InstanceNorm2d  # their code's default: affine=False, no running statistics

    torch.manual_seed(11)  # a fork: blocks named `block`, affine norms, 9 blocks
    net = _randomize_affine(FamilyGenerator(2, 9, affine, "block"), 11)
    write("aitorzip_block_affine", net, 4, (16, 20), (15, 14), None, seed=11, both=True)

    torch.manual_seed(12)  # the original's naming with affine norms, 6 blocks, ngf 3
    net = _randomize_affine(FamilyGenerator(3, 6, affine, "conv_block"), 12)
    write("aitorzip_conv_block_affine", net, 4, (12, 16), (10, 13), legacy=False, seed=12)

    torch.manual_seed(13)  # `block`, affine-free
    net = FamilyGenerator(2, 6, instance, "block")
    write("aitorzip_block", net, 4, (16, 12), (11, 9), legacy=True, seed=13)

    torch.manual_seed(14)
    net = NamedPartsGenerator(2, 9, instance)
    write("aladdinpersson", net, 4, (16, 20), (13, 18), None, seed=14, both=True)

    torch.manual_seed(15)
    net = _randomize_affine(NamedPartsGenerator(2, 6, affine), 15)
    write("aladdinpersson_affine", net, 4, (12, 12), (9, 14), legacy=False, seed=15)


if __name__ == "__main__":
    main()
