"""Official-layout checkpoint conversion and safe loading (ssaseg.checkpoints)."""
from __future__ import annotations

import ast
import importlib
import pickle
from pathlib import Path

import pytest
import torch

import ssaseg
from ssaseg.checkpoints import SSA_PARAMETER_NAMES, convert_official_state_dict, load_checkpoint
from ssaseg.weights import WeightsError

_OFFICIAL_NAMES = {ours: theirs for theirs, ours in SSA_PARAMETER_NAMES.items()}


def _to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-key an ssaseg EncoderDecoder state dict into the official mmseg 0.30 layout."""
    out = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            first, _, rest = key[len("classifier."):].partition(".")
            out[f"decode_head.{_OFFICIAL_NAMES[first]}.{rest}"] = value
        elif key.startswith("decoder."):
            out["decode_head." + key[len("decoder."):]] = value
        elif key.startswith("aux_heads.0.classifier."):
            out["auxiliary_head." + key[len("aux_heads.0.classifier."):]] = value
        elif key.startswith("aux_heads.0.decoder."):
            out["auxiliary_head." + key[len("aux_heads.0.decoder."):]] = value
        else:
            out[key] = value
    return out


def _tiny_segformer(seed: int) -> ssaseg.Segmentor:
    torch.manual_seed(seed)
    return ssaseg.create_model(
        "segformer_b0", num_classes=5, embed_dims=16, num_heads=(1, 1, 1, 1), depths=(1, 1, 1, 1), channels=32
    ).eval()


def test_official_checkpoint_round_trip(tmp_path):
    source = _tiny_segformer(0)
    official = _to_official(source.state_dict())
    official["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(6)
    assert "decode_head.center_pos.weight" in official and "decode_head.gt_center_proj.weight" in official
    path = tmp_path / "official.pth"
    torch.save({"meta": {"CLASSES": ["a"] * 5}, "state_dict": official}, path)

    loaded = ssaseg.create_model(
        "segformer_b0", num_classes=5, embed_dims=16, num_heads=(1, 1, 1, 1), depths=(1, 1, 1, 1), channels=32,
        checkpoint=str(path),
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_convert_maps_every_ssa_name_and_drops_unused_buffer():
    state = {f"decode_head.{name}.weight": torch.zeros(1) for name in SSA_PARAMETER_NAMES}
    state["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(3)
    state["decode_head.fusion_conv.conv.weight"] = torch.zeros(1)
    state["module.backbone.layers.0.0.projection.weight"] = torch.zeros(1)
    out = convert_official_state_dict(state)
    assert sorted(out) == sorted(
        [f"classifier.{name}.weight" for name in SSA_PARAMETER_NAMES.values()]
        + ["decoder.fusion_conv.conv.weight", "backbone.layers.0.0.projection.weight"]
    )


def test_convert_cascade_and_auxiliary_heads():
    state = {
        "decode_head.0.convs.0.conv.weight": torch.zeros(1),
        "decode_head.0.conv_seg.weight": torch.zeros(1),
        "decode_head.1.bottleneck.conv.weight": torch.zeros(1),
        "decode_head.1.get_feat_pos.weight": torch.zeros(1),
    }
    assert sorted(convert_official_state_dict(state)) == [
        "aux_heads.0.classifier.conv_seg.weight",
        "aux_heads.0.decoder.convs.0.conv.weight",
        "classifier.position_encoder.weight",
        "decoder.bottleneck.conv.weight",
    ]
    aux = convert_official_state_dict({"auxiliary_head.conv_seg.bias": torch.zeros(1)})
    assert list(aux) == ["aux_heads.0.classifier.conv_seg.bias"]


class _Payload:
    """Any non-tensor object: unpickling it must be refused."""


def test_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": _Payload()}}, f)
    with pytest.raises(ValueError, match="evil.pth"):
        load_checkpoint(_tiny_segformer(0), path)


def test_mismatch_names_file_and_keys(tmp_path):
    path = tmp_path / "other.pth"
    state = _tiny_segformer(0).state_dict()
    state["classifier.conv_seg.weight"] = torch.zeros(7, 32, 1, 1)
    del state["classifier.class_position.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(_tiny_segformer(1), path)
    message = str(err.value)
    assert "other.pth" in message and "classifier.conv_seg.weight" in message
    assert "missing classifier.class_position.weight" in message


def test_missing_file():
    with pytest.raises(WeightsError, match="not found: nope.pth"):
        load_checkpoint(_tiny_segformer(0), "nope.pth")


def _ssaseg_import_graph() -> dict[str, set[str]]:
    """``module -> ssaseg modules it imports``, from every ``import`` statement in src/ssaseg,
    including those inside functions (a lazy import is still a dependency), except annotation-only
    imports under ``if TYPE_CHECKING:`` (never executed)."""
    root = Path(ssaseg.__file__).parent
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = ("ssaseg",) + path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        type_only = {
            id(inner) for node in ast.walk(tree)
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for stmt in node.body for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
            else:
                continue
            for candidate in candidates:
                # the longest ssaseg module the name refers to (a submodule, else its module)
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def test_no_import_cycles_and_every_module_imports():
    graph = _ssaseg_import_graph()
    assert {"ssaseg.weights", "ssaseg.pretrained", "ssaseg.checkpoints", "ssaseg.models"} <= set(graph)
    # weights is the leaf of the weights code: torch / safetensors / stdlib only.
    assert graph["ssaseg.weights"] == set()
    assert "ssaseg.models" not in graph["ssaseg.checkpoints"] and "ssaseg.models" not in graph["ssaseg.pretrained"]
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    for module in sorted(graph):
        importlib.import_module(module)
