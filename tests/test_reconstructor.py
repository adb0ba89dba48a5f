import numpy as np
import pytest
import torch

from facerecon.errors import InputError
from facerecon.models import create_model, save_checkpoint
from facerecon.reconstructor import (
    CPU_BF16_TOLERANCE,
    ReconstructOptions,
    Reconstructor,
    WeightsNotFound,
)


@pytest.fixture(scope="module")
def reconstructor(tiny_weights):
    return Reconstructor(tiny_weights, device="cpu")


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsNotFound, match="FACERECON_WEIGHTS"):
        Reconstructor(tmp_path / "absent.pt")


def test_info_describes_the_loaded_model(reconstructor, tiny_weights):
    info = reconstructor.info
    assert info.variant == "vrn-tiny" and info.version == "test"
    assert info.input_size == 192 and info.slices == 200 and info.device == "cpu"


def test_staged_and_one_call_paths_agree(reconstructor, astronaut_jpeg):
    face = reconstructor.prepare(astronaut_jpeg)
    assert face.crop.shape == (192, 192, 3) and face.crop.dtype == np.float32
    (volume,) = reconstructor.predict([face])
    assert volume.shape == (200, 192, 192) and face.timings_ms["network"] > 0
    assert volume.logits.shape == (200, 48, 48)  # the full volume is made only on demand
    full = volume.probability()
    assert full.shape == (200, 192, 192) and 0.0 <= full.min() and full.max() <= 1.0
    batch = reconstructor.predict([face, face])
    np.testing.assert_allclose(batch[0].logits, volume.logits, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(batch[1]), batch[1].probability())


def test_a_synthetic_volume_becomes_a_mesh_in_image_pixels(reconstructor, astronaut):
    """finish() on a known ball volume: the mesh lands where the ball is in the image."""
    face = reconstructor.prepare(astronaut)
    d, y, x = np.mgrid[:200, :192, :192].astype(np.float32)
    volume = ((x - 96) ** 2 + (y - 96) ** 2 + (d - 100) ** 2 <= 40**2).astype(np.float32)
    options = ReconstructOptions(views=((-45.0, 0.0), (45.0, 10.0)), view_size=64)
    result = reconstructor.finish(face, volume, options)
    centre_image = face.transform.to_image(np.array([[96.0, 96.0]]))[0]
    np.testing.assert_allclose(result.mesh.vertices[:, :2].mean(0), centre_image, atol=2.0)
    radius = np.linalg.norm(result.mesh.vertices[:, :2] - centre_image, axis=1).max()
    assert radius == pytest.approx(40 / face.transform.scale, rel=0.1)
    assert result.mesh.colors.shape == (len(result.mesh.vertices), 3)
    assert [(v.yaw, v.pitch) for v in result.views] == [(-45.0, 0.0), (45.0, 10.0)]
    assert all(v.image.shape == (64, 64, 4) and v.image[..., 3].any() for v in result.views)
    assert result.frontal is not None and result.pose is not None
    assert set(result.timings_ms) >= {"decode", "crop", "mesh", "pose", "render"}


def test_an_empty_volume_is_a_clear_error_not_a_crash(reconstructor, astronaut):
    face = reconstructor.prepare(astronaut)
    with pytest.raises(InputError, match="no face surface"):
        reconstructor.finish(face, np.zeros((200, 192, 192), np.float32), ReconstructOptions())


@pytest.mark.parametrize(
    "options, field",
    [
        (ReconstructOptions(views=((0.0, 200.0),)), "options.views"),
        (ReconstructOptions(views=((float("nan"), 0.0),)), "options.views"),
        (ReconstructOptions(view_size=5000), "options.view_size"),
        (ReconstructOptions(decimate_faces=3), "options.decimate_faces"),
        (ReconstructOptions(views=((0.0, 0.0),) * 17), "options.views"),
    ],
)
def test_bad_options_name_their_field(reconstructor, astronaut, options, field):
    with pytest.raises(InputError) as error:
        reconstructor(astronaut, options=options)
    assert error.value.field == field


def test_bad_arrays_are_refused(reconstructor):
    with pytest.raises(InputError):
        reconstructor(np.zeros((100, 100), np.uint8))
    with pytest.raises(InputError):
        reconstructor(np.zeros((100, 100, 3), np.float32))


@pytest.mark.parametrize("variant", ["vrn-tiny", "vrn-light"])
def test_bf16_network_stays_within_its_stated_tolerance_of_fp32(variant, astronaut, tmp_path):
    """bfloat16 on the CPU (the default where the CPU has it natively) moves the logits by
    at most CPU_BF16_TOLERANCE of the largest fp32 logit, a tenth of that on average:
    random weights, batch-norm statistics and biases, so that every layer matters."""
    torch.manual_seed(1)
    model = create_model(variant)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    path = tmp_path / "random.pt"
    save_checkpoint(path, model, variant, half=False)
    fp32 = Reconstructor(path, device="cpu", precision="fp32")
    bf16 = Reconstructor(path, device="cpu", precision="bf16")
    assert not fp32.cpu_bf16 and bf16.cpu_bf16 and fp32.info.variant == variant
    face = fp32.prepare(astronaut)
    reference = fp32.predict([face])[0].logits
    low = bf16.predict([face])[0].logits
    scale = np.abs(reference).max()
    error = np.abs(low - reference)
    assert error.max() <= CPU_BF16_TOLERANCE * scale
    assert error.mean() <= CPU_BF16_TOLERANCE / 10 * scale
    assert error.max() > 0  # it did run in bfloat16


def test_precision_is_checked(tiny_weights, monkeypatch):
    with pytest.raises(ValueError, match="precision"):
        Reconstructor(tiny_weights, device="cpu", precision="fp8")
    monkeypatch.setenv("FACERECON_PRECISION", "fp32")
    assert not Reconstructor(tiny_weights, device="cpu").cpu_bf16
