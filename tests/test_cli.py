from pathlib import Path

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


def test_detector_defaults_to_the_same_variable_as_the_server(monkeypatch, tmp_path):
    args = ["reconstruct", "photo.jpg", "--out", str(tmp_path)]
    monkeypatch.delenv("FACERECON_DETECTOR", raising=False)
    assert build_parser().parse_args(args).detector is None
    monkeypatch.setenv("FACERECON_DETECTOR", "/models/yunet.onnx")
    assert build_parser().parse_args(args).detector == Path("/models/yunet.onnx")
