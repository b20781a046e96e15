"""Packaging: configs inside the package and the wheel, a torch-free CLI start, the packaged
config catalogue, and (slow) the built wheel in a fresh venv outside the clone."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from ssaseg.cli import run
from ssaseg.config_catalog import configs_root, copy_config, find_config, list_configs, resolve_config

ROOT = Path(__file__).resolve().parents[1]
PAPER_ARCHS = ("afformer", "cgrseg", "fcn", "ocrnet", "seaformer", "segformer", "segnext", "upernet_swin",
               "upernet_vit_adapter")


def _torch_free(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter and fail if it imported torch."""
    check = f"{code}\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    return subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_help_version_and_configs_do_not_import_torch():
    for argv in (["--help"], ["--version"], ["configs", "list"], ["configs", "show", "segnext_t_512x512_160k_ade20k_ssa"],
                 ["train", "--help"], ["export", "--help"]):
        proc = _torch_free(f"import ssaseg.cli\ntry:\n    ssaseg.cli.run({argv!r})\nexcept SystemExit as e:\n"
                           "    assert not e.code, e.code")
        assert proc.returncode == 0, (argv, proc.stderr)
    proc = _torch_free("import ssaseg; print(ssaseg.__version__)")
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr


def test_package_data_globs_cover_every_config():
    """Every file under src/ssaseg/configs is matched by pyproject's package-data patterns."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ssaseg"]
    package = ROOT / "src" / "ssaseg"
    files = [p.relative_to(package) for p in (package / "configs").rglob("*") if p.is_file()]
    assert len(files) > 70
    regexes = [re.compile(re.escape(p).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*") + "$") for p in patterns]
    unmatched = [f for f in files if not any(r.match(f.as_posix()) for r in regexes)]
    assert not unmatched


def test_catalogue_lists_finds_and_copies(tmp_path, capsys):
    names = list_configs()
    assert len(names) == len(set(names)) > 70 and not [n for n in names if n.startswith("_")]
    for arch in PAPER_ARCHS:
        assert list_configs(f"{arch}*"), arch
    assert list_configs("ade20k") == list_configs("*ade20k*")
    assert find_config("segformer/segformer_b5_512x512_160k_ade20k_ssa.yaml") == find_config(
        "segformer_b5_512x512_160k_ade20k_ssa")
    with pytest.raises(ValueError, match="did you mean segformer_b5_512x512_160k_ade20k_ssa"):
        find_config("segformer_b5_512x512_160k_ade20k_sa")
    # a path that exists wins over a packaged name; a missing .yaml path is a missing file
    local = tmp_path / "segnext_t_512x512_160k_ade20k_ssa.yaml"
    local.write_text("model: {name: segnext_t}\n")
    assert resolve_config(local) == local
    with pytest.raises(ValueError, match="config file not found"):
        resolve_config(tmp_path / "nope.yaml")
    # copy keeps the layout so that _base_ resolves; loading the copy equals loading the original
    from ssaseg.config import load_config

    written = copy_config("segnext_t_512x512_160k_ade20k_ssa", tmp_path / "mine")
    assert written[0] == tmp_path / "mine" / "segnext" / "segnext_t_512x512_160k_ade20k_ssa.yaml"
    assert all(p.is_file() for p in written) and any("_base_" in p.parts for p in written)
    assert load_config(written[0]) == load_config(find_config("segnext_t_512x512_160k_ade20k_ssa"))
    written[0].write_text(written[0].read_text() + "\n# my edit\n")
    assert run(["configs", "copy", "segnext_t_512x512_160k_ade20k_ssa", str(tmp_path / "mine")]) == 2
    assert "already exist" in capsys.readouterr().err and "# my edit" in written[0].read_text()
    assert run(["configs", "copy", "segnext_t_512x512_160k_ade20k_ssa", str(tmp_path / "mine"), "--overwrite"]) == 0
    assert "# my edit" not in written[0].read_text()
    capsys.readouterr()
    assert run(["configs", "list", "no-such-thing"]) == 2
    assert run(["configs", "show", "segnext_t_512x512_160k_ade20k_ssa", "--resolved"]) == 0
    assert "max_iters: 160000" in capsys.readouterr().out


def test_train_accepts_a_packaged_config_name(capsys):
    # the name resolves; the run then stops on a user error (no dataset here) with exit 2
    assert run(["train", "segnext_t_512x512_160k_ade20k_ssa", "--set", "data.root=/no/such/ade",
                "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "/no/such/ade" in err and "Traceback" not in err
    assert run(["train", "segnext_t_512x512_160k_ade20k_sssa"]) == 2
    assert "did you mean segnext_t_512x512_160k_ade20k_ssa" in capsys.readouterr().err


def _build_wheel(out: Path) -> Path:
    """Build the wheel from a copy of the sources (the clone stays clean)."""
    src = out / "src_copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out / "dist"), str(src)], check=True, timeout=600)
    (wheel,) = (out / "dist").glob("ssaseg-*.whl")
    return wheel


ROUND_TRIP = """
import subprocess, sys, torch, ssaseg
assert "site-packages" in ssaseg.__file__, ssaseg.__file__
torch.manual_seed(0)
model = ssaseg.create_model("segformer_b0", 5, embed_dims=8, depths=(1, 1, 1, 1), channels=32).eval().deploy()
model.save_pretrained("saved")
loaded = ssaseg.from_pretrained("saved")
x = torch.randn(1, 3, 64, 64)
with torch.no_grad():
    assert torch.equal(loaded(x), model(x))
subprocess.run([sys.argv[1], "export", "saved", "m.onnx", "--size", "64", "64"], check=True)
import onnxruntime as ort
(out,) = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
with torch.no_grad():
    torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=0)
print("round trip ok")
"""


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_wheel_in_a_fresh_venv(tmp_path):
    """The built wheel alone (dependencies borrowed from this environment's site-packages,
    not ssaseg) in a fresh venv, outside the clone: configs list, demo, and the
    save_pretrained -> from_pretrained -> ssaseg export round trip."""
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "ssaseg/configs/SCHEMA.md" in names and "ssaseg/configs/_base_/demo.yaml" in names
    assert sum(n.startswith("ssaseg/configs/") and n.endswith(".yaml") for n in names) > 70
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shared = [p for p in sys.path if p.endswith("site-packages")]
    # plain path lines: the shared environment's editable ssaseg finder (a .pth hook) is not run
    Path(site, "deps.pth").write_text("\n".join(shared) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SSASEG_CACHE"] = str(tmp_path / "cache")
    ssaseg_bin = str(venv / "bin" / "ssaseg")

    def sh(*argv: str) -> str:
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc.stdout

    assert "segformer_b5_512x512_160k_ade20k_ssa" in sh(ssaseg_bin, "configs", "list")
    assert sh(ssaseg_bin, "--version").startswith("ssaseg ")
    assert "round trip ok" in sh(str(py), "-c", ROUND_TRIP, ssaseg_bin)
    out = sh(ssaseg_bin, "demo", "--iters", "4", "--out", "demo", "--device", "cpu")
    assert (work / "demo" / "report.md").is_file() and "mIoU" in out
