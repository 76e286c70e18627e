"""``jobs/preview.py`` writes a readable contact sheet for every recipe (in-process, debug sizes)."""


import pytest
from PIL import Image

from pipelines.data.preview import Layout
from tests.pipelines.data.test_dataset import tiny_datasets
from tests.scripts import load_script

pytestmark = pytest.mark.slow


def _job():
    return load_script("jobs/preview.py")


@pytest.fixture(scope="module")
def data(ray_cluster, tmp_path_factory):
    return tiny_datasets(tmp_path_factory)


# recipe, dataset, split, (rows, cols) of the sheet for 2 samples at debug size
CASES = [("coclr", "ucf", "train", (2 * 4, 8)),          # rgb_0, flow_0, rgb_1, flow_1 per sample
         ("dpc", "ucf", "train", (2 * 4, 3)),            # 4 blocks of 3 frames per sample
         ("detection", "ucf", "train", (2, 8)),
         ("classification", "ucf", "train", (2, 8)),
         ("eval", "cha", "test", (1 * 6, 8))]            # 1 test video, 2 windows x 3 crops


@pytest.mark.parametrize("recipe,which,split,shape", CASES)
def test_preview_png_for_every_recipe(data, tmp_path, capsys, recipe, which, split, shape):
    out = tmp_path / f"{recipe}.png"
    code = _job().main(["--manifest", data[which], "--recipe", recipe, "--split", split, "--out", str(out),
                        "--samples", "2", "--debug"])
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == Layout().size(*shape)
        pixels = image.convert("L").getextrema()
    assert pixels[0] < 50 and pixels[1] > 200  # text and frames drawn, not a blank sheet


def test_preview_rejects_an_unknown_split(data, tmp_path, capsys):
    code = _job().main(["--manifest", data["ucf"], "--recipe", "classification", "--split", "nope",
                        "--out", str(tmp_path / "x.png")])
    assert code == 2 and "no manifest rows in split 'nope'" in capsys.readouterr().err
