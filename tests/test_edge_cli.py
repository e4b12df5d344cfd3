"""`edge-classify`: files, folders and globs, JSON, bad files, model errors, --bench."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.cli import build_parser, main

try:
    from edge_models import REPO, fashion_mnist
except ImportError:  # tests/ collected as a package
    from tests.edge_models import REPO, fashion_mnist


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Twelve test-set PNGs in a folder tree, plus a JPEG photo, and their true labels by name."""
    root = tmp_path_factory.mktemp("pictures")
    images, labels = fashion_mnist("t10k", 12)
    (root / "nested" / "deeper").mkdir(parents=True)
    truth = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root if i < 4 else root / "nested" if i < 8 else root / "nested" / "deeper"
        path = folder / f"item{i:02d}.png"
        Image.fromarray(image).save(path)
        truth[path.name] = int(label)
    (root / "nested" / "readme.txt").write_text("not an image, and not an image extension")
    return root, truth


def edge_classify(*args: str) -> subprocess.CompletedProcess:
    """The installed console script when there is one next to this Python, else `python -m`."""
    script = Path(sys.executable).with_name("edge-classify")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_folder_is_searched_recursively_for_images(models, pictures, capsys):
    root, truth = pictures
    assert main(["--model", str(models / "model_int8.tflite"), str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == sorted(truth)
    path, answer = lines[0].split("\t")
    ranked = answer.split(", ")
    assert len(ranked) == 3 and all(float(r.rsplit(" ", 1)[1]) <= 1.0 for r in ranked)


def test_json_lines_keep_the_index_for_accuracy(models, pictures, capsys):
    root, truth = pictures
    assert main(["--model", str(models / "model_int8.onnx"), "--json", "--top-k", "2", str(root)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(truth)
    for row in rows:
        assert set(row) == {"path", "label", "top_k"} and len(row["top_k"]) == 2
        assert set(row["top_k"][0]) == {"label", "index", "score"}
        assert row["label"] == row["top_k"][0]["label"]
    correct = sum(row["top_k"][0]["index"] == truth[Path(row["path"]).name] for row in rows)
    assert correct >= len(rows) // 2


def test_globs_expand_and_unmatched_glob_fails(models, pictures, capsys):
    root, truth = pictures
    code = main(["--model", str(models / "model_int8.tflite"), str(root / "**" / "item1*.png"),
                 str(root / "nothing-*.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert sorted(Path(line.split("\t")[0]).name for line in out.splitlines()) == ["item10.png", "item11.png"]
    assert "nothing-*.png: no files match" in err


def test_one_bad_file_among_good_ones_is_reported_and_the_rest_classified(models, pictures, tmp_path):
    root, truth = pictures
    good = sorted(root.rglob("*.png"))[:3]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    done = edge_classify("--model", str(models / "model_int8.tflite"), str(good[0]), str(bad), *map(str, good[1:]),
                         str(tmp_path / "missing.png"))
    assert done.returncode == 1
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == list(map(str, good))
    errors = [line for line in done.stderr.splitlines() if not line.startswith(("INFO:", "edge_runtime: warning"))]
    assert len(errors) == 2
    assert errors[0].startswith(f"{bad}: ") and errors[1] == f"{tmp_path / 'missing.png'}: no such file"


def test_threshold_answers_unsure(models, pictures, capsys):
    root, _ = pictures
    assert main(["--model", str(models / "model_int8.tflite"), "--threshold", "1.0", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.split("\t")[1].startswith("unsure (") for line in lines)
    assert main(["--model", str(models / "model_int8.tflite"), "--threshold", "0", "--json", str(root)]) == 0
    assert all(json.loads(line)["label"] != "unsure" for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("problem", ["missing", "renamed", "checksum"])
def test_model_problems_exit_2_with_one_line_before_any_image(models, pictures, tmp_path, capsys, problem):
    root, _ = pictures
    if problem == "missing":
        model = tmp_path / "nope.tflite"
    elif problem == "renamed":
        model = tmp_path / "model.onnx"
        shutil.copy(models / "model_int8.tflite", model)
    else:
        model = tmp_path / "model_int8.tflite"
        shutil.copy(models / "model_int8.tflite", model)
        manifest = json.loads((models / "manifest.json").read_text())
        manifest["artifacts"][1]["sha256"] = "f" * 64
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--model", str(model), str(root)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and str(model) in err
    if problem == "checksum":
        assert main(["--model", str(model), "--no-verify", str(root)]) == 0


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help and len(action.help) > 15


def test_nothing_to_do_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "nothing to classify" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command(models, pictures):
    root, truth = pictures
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "--model", str(models / "model_int8.onnx"),
                           "--top-k", "1", str(root)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(truth)


def test_bench_reports_latency_and_cold_start(models, capsys):
    assert main(["--model", str(models / "model_int8.tflite"), "--bench", "--bench-runs", "100", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["runs"] == 100
    assert 0 < figures["median_ms"] <= figures["p99_ms"] < 1000
    assert 0 < figures["cold_start_s"] < figures["cold_start_with_python_s"] < 60
    assert main(["--model", str(models / "model_int8.onnx"), "--bench", "--bench-runs", "20"]) == 0
    text = capsys.readouterr().out
    assert "median" in text and "p99" in text and "cold start" in text


def test_bench_on_a_given_image(models, pictures, capsys):
    root, _ = pictures
    image = sorted(root.glob("*.png"))[0]
    assert main(["--model", str(models / "model_float.tflite"), "--bench", "--bench-runs", "10", str(image)]) == 0
    assert "latency" in capsys.readouterr().out


def test_bench_on_a_photo_splits_the_photo_path_by_stage(models, pictures, tmp_path, capsys):
    root, _ = pictures
    garment = np.asarray(Image.open(sorted(root.glob("*.png"))[0]).resize((120, 120)))
    floor = np.random.default_rng(0).integers(150, 230, (200, 260, 3), dtype=np.uint8)   # a busy floor
    floor[40:160, 70:190] = np.minimum(floor[40:160, 70:190], 255 - garment[..., None])
    photo = tmp_path / "photo.jpg"
    Image.fromarray(floor).save(photo, quality=90)
    assert main(["--model", str(models / "model_int8.tflite"), "--bench", "--bench-runs", "30", "--json", str(photo)]) == 0
    figures = json.loads(capsys.readouterr().out)
    p = figures["photo"]
    assert p["runs"] == 30 and set(p["stages_ms"]) == {"decode", "cutout", "conversion", "model"}
    assert all(v > 0 for v in p["stages_ms"].values())
    assert p["median_ms"] <= p["p99_ms"] and p["ratio_to_model_call"] > 1
    assert main(["--model", str(models / "model_int8.tflite"), "--bench", "--bench-runs", "10", str(photo)]) == 0
    assert "photo path" in capsys.readouterr().out
    png = sorted(root.glob("*.png"))[0]                    # a dataset image has no photo path
    assert main(["--model", str(models / "model_int8.tflite"), "--bench", "--bench-runs", "10", "--json", str(png)]) == 0
    assert "photo" not in json.loads(capsys.readouterr().out)


def test_bench_image_is_a_dataset_style_picture():
    from edge_runtime.cli import _builtin_test_image

    image = _builtin_test_image()
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image[0, 0] == 0 and image.max() > 100


# --- photos as they come off a phone: 108 and 200 Mpx JPEGs, HEIC ------------------------------------

# edge-classify in a child process that prints its own peak RSS (VmHWM) last on stderr. Not the child's
# ru_maxrss: Linux carries the parent's high-water mark across fork+exec, so a child of this (TensorFlow-sized)
# test process would report the parent's figure.
_WITH_PEAK_RSS = """
import sys
from edge_runtime.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read().splitlines()
print("VmHWM_kB", [line.split()[1] for line in status if line.startswith("VmHWM:")][0], file=sys.stderr)
sys.exit(code)
"""


def classify_measuring_peak_rss(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    done = subprocess.run([sys.executable, "-c", _WITH_PEAK_RSS, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("VmHWM_kB "), done.stderr
    return done, int(last.split()[1])


def test_phone_photos_of_108_and_200_mpx_are_classified_in_little_memory(models, phone_photos):
    """The same scene at 12, 108 and 200 Mpx: the same answer, and a peak RSS under 2× the 12 Mpx one's."""
    answers, peaks = {}, {}
    for size in ("4000x3000", "12000x9000", "16320x12240"):
        done, peaks[size] = classify_measuring_peak_rss("--model", str(models / "model_int8.tflite"), "--json",
                                                        str(phone_photos / f"photo-{size}.jpg"))
        assert done.returncode == 0, done.stderr
        answers[size] = json.loads(done.stdout)["label"]
    print(f"\n  [phone photos] edge-classify peak RSS (MB): " + ", ".join(f"{s} {kb / 1024:.0f}" for s, kb in peaks.items())
          + f"; answers {answers}")
    assert answers["4000x3000"] == "Trouser"
    assert answers["12000x9000"] == answers["16320x12240"] == answers["4000x3000"]
    assert peaks["12000x9000"] < 2 * peaks["4000x3000"] and peaks["16320x12240"] < 2 * peaks["4000x3000"]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith(("INFO:", "edge_runtime: warning"))]


def test_pictures_too_big_to_decode_small_get_one_line_each(models, phone_photos):
    png, bomb = phone_photos / "plain-12000x9000.png", phone_photos / "bomb-65500x65500.jpg"
    progressive = phone_photos / "progressive-12000x9000.jpg"
    good = phone_photos / "photo-4000x3000.jpg"
    done = edge_classify("--model", str(models / "model_int8.tflite"), str(png), str(bomb), str(progressive), str(good))
    assert done.returncode == 1
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [str(good)]
    errors = _error_lines(done.stderr)
    assert len(errors) == 3, done.stderr
    assert errors[0] == f"{png}: refused, image declares 108 Mpx, over the 64 Mpx limit (possible decompression bomb)"
    assert errors[1].startswith(f"{bomb}: refused, JPEG declares 65500×65500") and "1/8 scale" in errors[1]
    assert errors[2].startswith(f"{progressive}: refused, progressive JPEG declares 12000×9000 = 108 Mpx")


def test_heic_gives_the_same_answer_as_the_jpeg_it_was_made_from(models, heic_files, capsys):
    paths = [heic_files / name for name in ("photo.jpg", "thumbnail.heic", "plain.heic")]
    assert main(["--model", str(models / "model_int8.tflite"), "--json", *map(str, paths)]) == 0
    rows = {Path(row["path"]).name: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["photo.jpg"]["label"] == "Trouser"
    assert rows["thumbnail.heic"]["label"] == rows["plain.heic"]["label"] == rows["photo.jpg"]["label"]
    # and a folder holding HEICs finds them
    assert main(["--model", str(models / "model_int8.tflite"), "--top-k", "1", str(heic_files)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_heic_without_the_heic_extra_gets_one_line_naming_it(models, heic_files):
    # What `import pillow_heif` sees where the extra is not installed: ModuleNotFoundError.
    code = "import sys; sys.modules['pillow_heif'] = None\nfrom edge_runtime.cli import main\nsys.exit(main(sys.argv[1:]))"
    heic, jpeg = heic_files / "thumbnail.heic", heic_files / "photo.jpg"
    done = subprocess.run([sys.executable, "-c", code, "--model", str(models / "model_int8.tflite"), str(heic),
                           str(jpeg)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [str(jpeg)]
    assert _error_lines(done.stderr) == [
        f"{heic}: HEIC/HEIF photo (an iPhone's default format); reading it needs the heic extra: "
        "pip install '.[heic]' in the fashion-edge folder (it installs pillow-heif)"]
