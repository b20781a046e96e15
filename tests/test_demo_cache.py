"""The demo cache: the temporary folder of a build that was killed is removed by the next call."""
import os

from ssaseg.data import demo


def test_abandoned_build_folders_are_removed(tmp_path):
    root = tmp_path / f"demo-v{demo.DEMO_VERSION}"
    root.mkdir()
    (root / demo._STAMP).write_text(demo._stamp_text())  # a current dataset: nothing to build
    dead = tmp_path / f".demo-v{demo.DEMO_VERSION}.building-{2**22 + 1}-abc"  # above Linux's pid_max
    alive = tmp_path / f".demo-v{demo.DEMO_VERSION}.building-{os.getpid()}-def"  # a build in progress
    for d in (dead, alive):
        (d / "images").mkdir(parents=True)
    assert demo.ensure_demo_dataset(tmp_path) == root
    assert not dead.exists() and alive.exists()
