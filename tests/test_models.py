import pytest
import torch

from facerecon.models import (
    VARIANTS,
    count_parameters,
    create_model,
    fold_batchnorm,
    load_checkpoint,
    save_checkpoint,
)


@pytest.mark.parametrize(
    "variant, low, high", [("vrn", 17e6, 20e6), ("vrn-light", 5.5e6, 6.5e6), ("vrn-tiny", 0, 3e5)]
)
def test_parameter_counts_match_the_documented_sizes(variant, low, high):
    assert low <= count_parameters(create_model(variant)) <= high


def test_output_is_a_volume_aligned_with_the_input():
    model = create_model("vrn-tiny").eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, 3, 192, 192))
    assert logits.shape == (2, 200, 192, 192)
    assert torch.isfinite(logits).all()


def test_intermediate_supervision_returns_one_output_per_stack():
    config = VARIANTS["vrn-tiny"].__class__(features=16, modules=1, intermediate_supervision=True)
    outputs = create_model(config).forward_logits(torch.rand(1, 3, 192, 192))
    assert [o.shape for o in outputs] == [(1, 200, 48, 48)] * 2


def test_folding_batchnorm_keeps_the_output():
    model = create_model("vrn-tiny")
    # Give batch-norm non-trivial statistics so that folding has something to get wrong.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 192, 192))
    model.eval()
    x = torch.rand(1, 3, 192, 192)
    with torch.inference_mode():
        expected = model(x)
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, atol=1e-3, rtol=1e-3)


def test_checkpoint_round_trip_rebuilds_the_network(tmp_path):
    model = create_model("vrn-tiny").eval()
    save_checkpoint(tmp_path / "tiny.pt", model, "vrn-tiny", meta={"version": "test"})
    loaded, info = load_checkpoint(tmp_path / "tiny.pt")
    assert info["variant"] == "vrn-tiny" and info["meta"]["version"] == "test"
    assert len(info["sha256"]) == 64
    x = torch.rand(1, 3, 192, 192)
    with torch.inference_mode():
        # Weights are stored in fp16, so allow for its rounding.
        torch.testing.assert_close(loaded(x), model(x), atol=5e-2, rtol=5e-2)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(KeyError, match="vrn-light"):
        create_model("resnet")


def test_landmark_head_returns_one_heatmap_per_landmark_beside_the_volume():
    model = create_model("vrn-tiny-landmarks").eval()
    with torch.inference_mode():
        stacks, heatmaps = model.forward_heads(torch.rand(2, 3, 192, 192))
    assert [s.shape for s in stacks] == [(2, 200, 48, 48)]
    assert heatmaps.shape == (2, 68, 48, 48)
    assert create_model("vrn-tiny").forward_heads(torch.rand(1, 3, 192, 192))[1] is None


def test_heatmap_points_find_a_peak_between_cells():
    from facerecon.models.vrn import heatmap_points

    truth = torch.tensor([[[50.3, 120.7], [3.0, 188.0]]])  # crop pixels
    centres = (torch.arange(48) + 0.5) * 4 - 0.5
    dx = (centres - truth[..., :1]) / 4  # (1, 2, 48)
    dy = (centres - truth[..., 1:]) / 4
    logits = -(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * 0.7**2)
    found = heatmap_points(logits)
    # the soft-argmax of a peak away from the border is sub-pixel; at the border the mass
    # cut off by the edge pulls it inwards, by less than a cell
    assert (found[0, 0] - truth[0, 0]).abs().max() < 0.2
    assert (found[0, 1] - truth[0, 1]).abs().max() < 4.0
