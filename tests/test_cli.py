import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from facerecon.cli import build_parser, main, parse_angles


def test_angles_parse_yaw_and_optional_pitch():
    assert parse_angles("-60,0,30:10") == ((-60.0, 0.0), (0.0, 0.0), (30.0, 10.0))
    assert parse_angles("") == ()


def test_without_weights_the_cli_says_so_and_reconstructs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACERECON_WEIGHTS", str(tmp_path / "none.pt"))
    photo = tmp_path / "face.png"
    photo.write_bytes(b"unused")
    assert main(["reconstruct", str(photo), "--out", str(tmp_path / "out")]) == 2
    assert "no model weights" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reconstruct_end_to_end_on_a_real_photo(tmp_path, tiny_weights, astronaut_jpeg, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.jpg").write_bytes(astronaut_jpeg)
    (photos / "broken.jpg").write_bytes(astronaut_jpeg[:300])
    out = tmp_path / "out"
    code = main(["reconstruct", str(photos), "--out", str(out), "--weights", str(tiny_weights),
                 "--views", "-30,30", "--size", "64", "--device", "cpu"])  # fmt: skip
    printed = capsys.readouterr()
    assert "broken.jpg: FAILED" in printed.err
    assert code == 1  # one photo failed, and the exit code says so
    assert "astronaut.jpg: FAILED" not in printed.err
    assert "astronaut.jpg:" in printed.out and "vertices" in printed.out
    mesh = trimesh.load(out / "astronaut.glb", force="mesh")
    assert len(mesh.faces) > 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "astronaut_frontal.png", "astronaut_yaw+30_pitch+0.png", "astronaut_yaw-30_pitch+0.png"
    ]  # fmt: skip


def test_info_prints_the_model(tiny_weights, capsys):
    assert main(["info", "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "vrn-tiny" in out and "cpu" in out


def test_info_says_what_is_available_and_where_from(tiny_weights, tmp_path, capsys):
    from facerecon.detect import SHIPPED_DETECTOR

    missing = tmp_path / "no_model.npz"
    args = ["info", "--weights", str(tiny_weights), "--device", "cpu", "--face-model", str(missing)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"detector   {SHIPPED_DETECTOR}" in out
    assert f"face model not installed at {missing}" in out and "import-face-model" in out
    assert "landmarks  none" in out  # vrn-tiny has no landmark head
    assert main([*args, "--detector", "none"]) == 0
    assert "detector   none" in capsys.readouterr().out
    assert main([*args, "--detector", str(tmp_path / "missing.onnx")]) == 2  # said, no traceback
    assert "missing.onnx" in capsys.readouterr().err


def test_detector_is_on_by_default_and_reads_the_server_variable(monkeypatch, tmp_path):
    from facerecon.detect import SHIPPED_DETECTOR, detector_path

    args = ["reconstruct", "photo.jpg", "--out", str(tmp_path)]
    monkeypatch.delenv("FACERECON_DETECTOR", raising=False)
    assert detector_path(build_parser().parse_args(args).detector) == SHIPPED_DETECTOR
    assert build_parser().parse_args([*args, "--no-detector"]).detector is None
    assert detector_path(build_parser().parse_args([*args, "--detector", "none"]).detector) is None
    monkeypatch.setenv("FACERECON_DETECTOR", "/models/yunet.onnx")
    assert detector_path(build_parser().parse_args(args).detector) == Path("/models/yunet.onnx")
    monkeypatch.setenv("FACERECON_DETECTOR", "none")
    assert detector_path(build_parser().parse_args(args).detector) is None


def test_a_missing_detector_file_is_a_clear_error(tmp_path, tiny_weights, astronaut_jpeg, capsys):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(astronaut_jpeg)
    argv = ["reconstruct", str(photo), "--out", str(tmp_path / "out"), "--weights",
            str(tiny_weights), "--device", "cpu",
            "--detector", str(tmp_path / "typo.onnx")]  # fmt: skip
    assert main(argv) == 2
    assert "face detector model not found" in capsys.readouterr().err


def test_outputs_are_named_by_the_whole_file_name(tmp_path, tiny_weights, astronaut_jpeg, capsys):
    """`a.v1.jpg` and `a.v2.jpg` keep their own files; so do `b.jpg` and `b.png`; the summary
    line names the files written."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.v1.jpg", "a.v2.jpg", "b.jpg", "b.png"):
        (photos / name).write_bytes(astronaut_jpeg)
    out = tmp_path / "out"
    argv = ["reconstruct", str(photos), "--out", str(out), "--weights", str(tiny_weights),
            "--views=-30", "--size", "32", "--device", "cpu", "--format", "ply",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    meshes = sorted(p.name for p in out.glob("*.ply"))
    assert meshes == ["a.v1.ply", "a.v2.ply", "b.ply", "b_2.ply"]
    assert {p.name for p in out.iterdir()} == {
        f"{stem}{end}" for stem in ("a.v1", "a.v2", "b", "b_2")
        for end in (".ply", "_frontal.png", "_yaw-30_pitch+0.png")
    }  # fmt: skip
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines[str(photos / "a.v2.jpg")].endswith(
        f"-> {out}/: a.v2.ply, a.v2_yaw-30_pitch+0.png, a.v2_frontal.png"
    )
    assert "b_2.ply" in lines[str(photos / "b.png")]


def test_registration_writes_textured_meshes_and_figures(tmp_path, tiny_weights, astronaut_jpeg):
    model = Path(__file__).resolve().parents[2] / "shared" / "facemodel" / "ict_face_light.npz"
    if not model.is_file():
        pytest.skip("needs ../shared/facemodel/ict_face_light.npz")
    photo = tmp_path / "eileen.jpg"
    photo.write_bytes(astronaut_jpeg)
    out = tmp_path / "out"
    argv = ["reconstruct", str(photo), "--out", str(out), "--weights", str(tiny_weights),
            "--views=", "--device", "cpu", "--registration", "--face-only",
            "--face-model", str(model)]  # fmt: skip
    assert main(argv) == 0
    assert (out / "eileen_registered.glb").read_bytes()[:4] == b"glTF"
    obj = (out / "eileen_registered.obj").read_text()
    assert "mtllib eileen_registered.mtl" in obj and obj.count("\nv ") == 6706 + 3
    assert (out / "eileen_registered.png").is_file() and (out / "eileen_registered.mtl").is_file()
    figures = json.loads((out / "eileen_registration.json").read_text())
    assert figures["topology"] == "ict-face-closed"
    assert np.asarray(figures["landmarks68_3d"]).shape == (68, 3)
    assert "jawOpen" in figures["expression"] and set(figures["pose"]) == {
        "yaw_deg", "pitch_deg", "roll_deg"
    }  # fmt: skip


def test_registration_without_the_face_model_says_how_to_get_it(
    tmp_path, tiny_weights, capsys, monkeypatch
):
    photo = tmp_path / "face.png"
    photo.write_bytes(b"unused")
    argv = ["reconstruct", str(photo), "--out", str(tmp_path / "out"), "--weights",
            str(tiny_weights), "--device", "cpu", "--registration"]  # fmt: skip
    assert main([*argv, "--face-model", str(tmp_path / "typo.npz")]) == 2
    assert "no face model at" in capsys.readouterr().err
    monkeypatch.setenv("FACERECON_FACE_MODEL", str(tmp_path / "not-installed.npz"))
    assert main(argv) == 2
    assert "import-face-model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_summary_says_when_no_face_was_found(tmp_path, tiny_weights, capsys):
    from PIL import Image

    from facerecon.reconstructor import NO_FACE_FOUND

    photo = tmp_path / "grey.png"
    Image.fromarray(np.full((240, 200, 3), 128, np.uint8)).save(photo)
    argv = ["reconstruct", str(photo), "--out", str(tmp_path / "out"), "--weights",
            str(tiny_weights), "--device", "cpu", "--views="]  # fmt: skip
    assert main(argv) == 0
    assert f"[{NO_FACE_FOUND}]" in capsys.readouterr().out
    assert main([*argv, "--no-detector"]) == 0  # no detector, nothing to say
    assert "found no face" not in capsys.readouterr().out


def test_mirror_averaging_can_be_turned_off(tmp_path, tiny_weights, astronaut_jpeg, monkeypatch):
    import facerecon.reconstructor as reconstructor_module

    made = []
    real = reconstructor_module.Reconstructor

    def recording(*args, **kwargs):
        made.append(kwargs["mirror_average"])
        return real(*args, **kwargs)

    monkeypatch.setattr(reconstructor_module, "Reconstructor", recording)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(astronaut_jpeg)
    argv = ["reconstruct", str(photo), "--weights", str(tiny_weights), "--views", "",
            "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "on")]) == 0
    assert main([*argv, "--out", str(tmp_path / "off"), "--no-mirror-average"]) == 0
    assert made == [True, False]
    assert (tmp_path / "off" / "a.glb").stat().st_size > 0
