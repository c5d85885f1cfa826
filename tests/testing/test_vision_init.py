"""The edge-filter first layer of tiny vision towers (mmtune.testing.vision_init)."""

import pytest
import torch

from mmtune.testing.vision_init import FILTER_NORM, edge_filters, init_patch_embeddings


def test_edge_filters_are_distinct_zero_mean_edges_and_flat_blobs():
    filters = edge_filters(64, 16)
    assert filters.shape == (64, 3, 16, 16)
    norms = filters.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((64,), FILTER_NORM), atol=1e-4)
    edges, blobs = filters[:-4], filters[-4:]
    # edges ignore flat colour (their job is form), blobs respond to nothing but flat colour
    assert edges.sum(dim=(2, 3)).abs().max() < 1e-4
    assert (blobs.std(dim=(2, 3)) < 1e-6).all()
    cos = torch.nn.functional.normalize(filters.flatten(1), dim=1)
    sim = cos @ cos.T - torch.eye(64)
    assert sim.abs().max() < 0.999  # no two filters alike


def test_an_edge_filter_answers_edges_of_its_own_orientation():
    # filter 0: orientation 0 (varies along x), odd phase is filter 8; a vertical edge excites it most
    odd = edge_filters(64, 16)[8]
    vertical = torch.zeros(3, 16, 16)
    vertical[:, :, 8:] = 1.0
    horizontal = vertical.transpose(1, 2)
    assert (odd * vertical).sum().abs() > 10 * (odd * horizontal).sum().abs()


def test_init_writes_2d_and_3d_patch_embeddings_and_leaves_other_convolutions():
    model = torch.nn.ModuleDict({
        "patch2d": torch.nn.Conv2d(3, 32, kernel_size=14, stride=14),
        "patch3d": torch.nn.Conv3d(3, 32, kernel_size=(2, 14, 14), stride=(2, 14, 14), bias=False),
        "other": torch.nn.Conv2d(3, 8, kernel_size=3, stride=1),
    })
    before = model["other"].weight.clone()
    assert init_patch_embeddings(model) == 2
    assert torch.equal(model["patch2d"].weight, edge_filters(32, 14))
    assert torch.count_nonzero(model["patch2d"].bias) == 0
    # a still image repeated over 2 frames sees the same filter as a 2-D patch embedding
    frames = model["patch3d"].weight
    assert torch.allclose(frames.sum(dim=2), edge_filters(32, 14), atol=1e-6)
    assert torch.equal(model["other"].weight, before)
    with pytest.raises(ValueError, match="no patch embedding"):
        init_patch_embeddings(torch.nn.Linear(3, 3))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_tiny_towers_start_from_edge_filters(kind):
    from transformers import AutoModel

    from mmtune.testing.tiny_vision import tiny_vision_dir

    model = AutoModel.from_pretrained(tiny_vision_dir(kind))
    weight = model.embeddings.patch_embedding.weight
    assert torch.allclose(weight, edge_filters(weight.shape[0], weight.shape[-1]), atol=1e-6)
