"""``python -m device screen | kiosk --check-config | selftest | demo`` end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from device.camera import draw_fundus
from device.cli import cli

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    cv2.imwrite(str(d / "a_good.png"), draw_fundus(1, 320, 240)[..., ::-1])
    cv2.imwrite(str(d / "b_dark.jpg"), (draw_fundus(2, 320, 240) * 0.1).astype(np.uint8)[..., ::-1])
    return d


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_screen_json_one_object_per_image(images):
    res = CliRunner().invoke(cli, ["screen", str(images), "--json", "--model", "fake"])
    assert res.exit_code == 0, res.output
    objs = _json_lines(res.stdout)
    assert [Path(o["image"]).name for o in objs] == ["a_good.png", "b_dark.jpg"]
    good, dark = objs
    assert set(good) == {"image", "verdict", "probability", "quality", "regions", "model_id", "timings_ms"}
    assert good["verdict"] in ("referable", "non_referable") and 0 <= good["probability"] <= 1
    assert good["quality"] == {"gradable": True, "reasons": []} and good["model_id"] == "fake-deterministic"
    assert {"load", "preprocess", "gate", "inference", "regions", "total"} <= set(good["timings_ms"])
    assert dark["verdict"] == "ungradable" and dark["quality"]["reasons"] == ["too dark — check the flash"]
    assert isinstance(dark["probability"], float)  # the model could still run: reported


def test_screen_bad_file_gets_an_error_object_and_others_go_on(images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = tmp_path / "missing.png"
    res = CliRunner().invoke(cli, ["screen", str(bad), str(images / "a_good.png"), str(missing), "--json",
                                   "--model", "fake"])
    assert res.exit_code == 1
    objs = _json_lines(res.stdout)
    assert len(objs) == 3 and "verdict" in objs[1]
    assert set(objs[0]) == {"image", "error"} and objs[0]["error"].endswith(".")
    assert objs[2] == {"image": str(missing), "error": f"The file {missing} does not exist; check the path and try "
                                                       "again."}
    assert res.stderr.strip() == "error: 2 of 3 images could not be screened (see their 'error')."


def test_screen_human_output_and_missing_model(images, tmp_path):
    res = CliRunner().invoke(cli, ["screen", str(images / "b_dark.jpg"), "--model", "fake"])
    assert res.exit_code == 0 and "UNGRADABLE" in res.stdout and "too dark" in res.stdout
    res = CliRunner().invoke(cli, ["screen", str(images), "--model", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "does not exist" in str(res.exception or res.output)


def test_kiosk_check_config(tmp_path):
    res = CliRunner().invoke(cli, ["kiosk", "--check-config"])
    assert res.exit_code == 0 and "config OK" in res.output and "camera:  folder" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[camera]\ntype = "folder"\npath = "x"\nzoom = 3\n')
    res = subprocess.run([sys.executable, "-m", "device", "kiosk", "--config", str(bad), "--check-config"],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: Unit config: field 'camera.zoom' is invalid (Extra inputs are not "
                                         "permitted); fix it in the config file")
    assert "Traceback" not in res.stderr


def test_selftest_reports_each_part(tmp_path):
    cfg = _unit_config(tmp_path, link="fake")
    res = CliRunner().invoke(cli, ["selftest", "--config", str(cfg)])
    lines = res.output.splitlines()
    assert [line.split()[1] for line in lines] == ["model", "camera", "display", "link", "disk"]
    assert all(line.startswith("OK") for line in lines), res.output
    assert res.exit_code == 0
    res = CliRunner().invoke(cli, ["selftest", "--config", str(cfg), "--model", str(tmp_path / "nope")])
    assert res.exit_code == 1 and res.output.startswith("FAIL model")


@pytest.mark.slow
def test_demo_command_writes_screens_records_and_exports(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "device", "demo", "--out", str(out), "--model", "fake"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Screened 11 photographs of 4 patients" in res.stdout and "P0004: referable" in res.stdout
    screens = sorted(p.name for p in (out / "screens").glob("*.png"))
    assert len(screens) == 16 and screens[-1] == "0016_P0004_summary.png"
    exports = sorted(out.glob("session_*.*"))
    assert [p.suffix for p in exports] == [".csv", ".json"]
    doc = json.loads(exports[1].read_text())
    assert len(doc["screenings"]) == 11 and doc["patients"]["P0004"] == "referable"
    assert (out / "records" / "records.sqlite").exists()


def test_bad_model_stops_the_unit_with_a_screen_not_a_traceback(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "device", "demo", "--out", str(out), "--model",
                          str(tmp_path / "no-model")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"error: The model folder {tmp_path / 'no-model'} does not exist; check the path "
                                  "or copy the bundle there.")
    assert [p.name for p in (out / "screens").iterdir()] == ["0001_model_error.png"]


def _unit_config(tmp_path, trigger="keyboard", link=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "unit.toml"
    cfg.write_text(f"""
[camera]
type = "fake"
[model]
type = "fake"
[display]
type = "file"
folder = "{tmp_path / 'screens'}"
[records]
folder = "{tmp_path / 'rec'}"
min_free_mb = 1
[kiosk]
trigger = "{trigger}"
poll_interval_s = 0.01
""" + (f'[link]\ntype = "{link}"\n' if link else ""))
    return cfg


def test_kiosk_command_keyboard_session_and_sigterm(tmp_path):
    cfg = _unit_config(tmp_path)
    res = subprocess.run([sys.executable, "-m", "device", "kiosk", "--config", str(cfg)], input="\n\nq\n",
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "2 photographs" in res.stdout and "'P0001': 'non_referable'" in res.stdout
    shown = sorted(p.name for p in (tmp_path / "screens").iterdir())
    assert shown == ["0001_ready.png", "0002_P0001_right_1.png", "0003_P0001_left_1.png", "0004_P0001_summary.png"]
    # the button-only unit under systemd: stdin closed, stopped by SIGTERM, no traceback
    cfg2 = _unit_config(tmp_path / "b", trigger="button_or_keyboard")
    proc = subprocess.Popen([sys.executable, "-m", "device", "kiosk", "--config", str(cfg2)], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "b" / "screens").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "0 photographs" in out and "Traceback" not in err


def test_preprocess_writes_outlined_crops_and_reports_bad_files(tmp_path):
    photo = tmp_path / "eye.png"
    cv2.imwrite(str(photo), cv2.cvtColor(draw_fundus(3, 640, 480), cv2.COLOR_RGB2BGR))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "crops"
    res = CliRunner().invoke(cli, ["preprocess", str(photo), str(bad), "--out", str(out), "--size", "128"])
    assert res.exit_code == 1
    assert f"{photo}: FOV centre (" in res.output and f"-> {out / 'eye_crop.png'}" in res.output
    assert f"{bad}: " in res.output  # the unreadable file gets its sentence, the good one is still written
    crop = cv2.imread(str(out / "eye_crop.png"))
    assert crop.shape == (128, 128, 3) and (crop[..., 1] == 255).any()  # the green FOV outline is drawn


def test_preprocess_to_an_unwritable_folder_is_one_sentence(tmp_path):
    # issue 16 item 11, same class as the unwritable export folder: it was a traceback
    photo = tmp_path / "eye.png"
    cv2.imwrite(str(photo), cv2.cvtColor(draw_fundus(3, 640, 480), cv2.COLOR_RGB2BGR))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = subprocess.run([sys.executable, "-m", "device", "preprocess", str(photo), "--out", str(blocker / "crops")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"error: The output folder {blocker / 'crops'} cannot be created (Not a "
                                  "directory); choose another --out folder.")
