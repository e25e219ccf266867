import matplotlib
import numpy as np
import PIL.Image

from cyclegan_tf import images, visualize


def _rows(n=2, size=16):
    rng = np.random.default_rng(0)
    keys = ("real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b")
    return {k: rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32) for k in keys}


def test_save_grid_writes_a_png_and_keeps_the_backend(tmp_path):
    backend = matplotlib.get_backend()
    path = visualize.save_grid(_rows(), str(tmp_path / "g" / "grid.png"), title="epoch 1")
    # 16 px images drawn 14x (224 px cells); 3 columns, 2 samples x 2 rows, gaps, labels, title.
    assert PIL.Image.open(path).size == (3 * 224 + 4 * 12, 34 + 4 * (22 + 224 + 12))
    pixels = np.asarray(PIL.Image.open(path).convert("RGB"))
    # real A of the first sample, pixel for pixel: its top-left source pixel fills a 14x14 block.
    first = np.asarray(images.to_uint8(_rows()["real_a"][0]))
    block = pixels[34 + 22 : 34 + 22 + 14, 12 : 12 + 14]
    assert (block == first[0, 0]).all()
    assert matplotlib.get_backend() == backend
    assert not (tmp_path / "g" / "grid.png.tmp.png").exists()


def test_grid_tensor_layout():
    grid = visualize.grid_tensor(_rows(n=2, size=16))
    assert grid.shape == (1, 4 * 16, 3 * 16, 3) and grid.dtype == "uint8"


def test_loss_plot(tmp_path):
    history = {"g/total": [(1, 3.0), (2, 2.5)], "d/a": [(1, 0.5), (2, 0.4)], "lr": [(1, 2e-4)]}
    path = visualize.save_loss_plot(history, str(tmp_path / "loss.png"))
    assert PIL.Image.open(path).size == (800, 450)
