"""The batched tensor augmentation against torchvision's RandomCrop(32, padding=4) + horizontal flip."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from kd_plugin.data.augment import IDENTITY_VIEW, NUM_VIEWS, PAD, apply_views, decode_views, encode_views, sample_views


@pytest.fixture(scope="module")
def image():
    return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def torchvision_view(img, dy, dx, flip):
    """The reference: torchvision's pad-4 crop at offset (dy, dx), then the optional horizontal flip."""
    out = TF.crop(TF.pad(img, PAD), dy, dx, 32, 32)
    return TF.hflip(out) if flip else out


def all_views():
    return torch.arange(NUM_VIEWS["y"])


def test_view_ids_cover_exactly_162_distinct_offset_flip_pairs():
    dy, dx, flip = decode_views(all_views())
    pairs = set(zip(dy.tolist(), dx.tolist(), flip.tolist(), strict=True))
    assert NUM_VIEWS["y"] == 162 and len(pairs) == 162
    assert pairs == {(y, x, f) for y in range(2 * PAD + 1) for x in range(2 * PAD + 1) for f in (0, 1)}
    assert torch.equal(encode_views(dy, dx, flip), all_views())
    assert decode_views(torch.tensor(IDENTITY_VIEW["y"])) == (PAD, PAD, 0)


def test_every_view_of_an_image_is_a_different_crop(image):
    crops = apply_views(image.expand(162, 3, 32, 32), all_views())
    assert len({c.numpy().tobytes() for c in crops}) == 162


def test_each_view_matches_torchvision_on_tensors(image):
    crops = apply_views(image.expand(162, 3, 32, 32), all_views())
    for view, (dy, dx, flip) in enumerate(zip(*(t.tolist() for t in decode_views(all_views())), strict=True)):
        assert torch.equal(crops[view], torchvision_view(image, dy, dx, flip)), f"view {view}"


def test_each_view_matches_torchvision_on_pil_images(image):
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    crops = apply_views(image.expand(162, 3, 32, 32), all_views())
    for view, (dy, dx, flip) in enumerate(zip(*(t.tolist() for t in decode_views(all_views())), strict=True)):
        expected = torch.from_numpy(np.array(torchvision_view(pil, dy, dx, flip))).permute(2, 0, 1)
        assert torch.equal(crops[view], expected), f"view {view}"


def test_a_mixed_batch_is_cropped_per_image():
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views = sample_views(40, "y", torch.Generator().manual_seed(2))
    out = apply_views(images, views)
    for img, view, got in zip(images, views, out, strict=True):
        assert torch.equal(got, torchvision_view(img, *(int(t) for t in decode_views(view))))


def test_random_crop_parameters_fall_inside_the_view_space(image):
    crop = T.RandomCrop(32, padding=PAD)
    for _ in range(50):
        dy, dx, _, _ = crop.get_params(TF.pad(image, PAD), (32, 32))
        assert 0 <= dy <= 2 * PAD and 0 <= dx <= 2 * PAD


def test_sampled_views_stay_in_range_and_n_has_one_view():
    views = sample_views(5000, "y", torch.Generator().manual_seed(0))
    assert int(views.min()) == 0 and int(views.max()) == 161
    assert torch.equal(sample_views(7, "n", None), torch.zeros(7, dtype=torch.int64))
