"""quant.model: shapes of every architecture (float and quantized), power-of-two quantizer scales."""

import math
import warnings

import pytest
import torch

from quant.model import ConfigError, ModelConfig, build, named_config, quantized_twin, shapes

EXPECTED_SHAPES = {
    "paper": [(10, 62, 62), (10, 31, 31), (20, 27, 27), (20, 13, 13), (3380,), (128,), (5,)],
    "paper-nopool2": [(10, 62, 62), (10, 31, 31), (20, 27, 27), (14580,), (128,), (5,)],
    "vgg": [(16, 62, 62), (16, 60, 60), (16, 30, 30), (32, 28, 28), (32, 26, 26), (32, 13, 13),
            (64, 11, 11), (64, 9, 9), (64, 4, 4), (1024,), (128,), (5,)],
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("arch", list(EXPECTED_SHAPES))
def test_layer_shapes(arch):
    assert shapes(named_config(arch)) == EXPECTED_SHAPES[arch]


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "quantized"])
@pytest.mark.parametrize("arch", list(EXPECTED_SHAPES))
def test_forward_gives_one_logit_per_class(arch, quantized):
    cfg = named_config(arch)
    model = build(quantized_twin(cfg) if quantized else cfg).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, 64, 64)).shape == (3, 5)
    weighted = [l for l in cfg.layers if l.kind in ("conv", "linear")]
    assert [tuple(m.weight.shape[:1]) for m in model.weighted] == [(l.out,) for l in weighted]
    assert [l.cls for l in weighted][-2:] == ["P", "NP"]


@pytest.mark.parametrize("arch", list(EXPECTED_SHAPES))
def test_float_weights_load_into_the_quantized_twin(arch):
    cfg = named_config(arch)
    fl = build(cfg)
    q = build(quantized_twin(cfg))
    missing, unexpected = q.load_state_dict(fl.state_dict(), strict=False)
    assert not unexpected
    assert all(k not in fl.state_dict() for k in missing)  # only quantizer parameters are new
    for a, b in zip(fl.weighted, q.weighted):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_config_file_overrides_layers(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text('{"layers": {"1": {"w_bits": 4, "a_bits": 6}, "2": {"sparsity": 0.8}}}')
    cfg = named_config("paper", f)
    weighted = [l for l in cfg.layers if l.kind in ("conv", "linear")]
    assert (weighted[1].w_bits, weighted[1].a_bits, weighted[2].sparsity) == (4, 6, 0.8)
    f.write_text('{"layers": {"0": {"w_bits": 9}}}')
    with pytest.raises(ConfigError, match="must be 2..8"):
        named_config("paper", f)
    f.write_text('{"layers": {"7": {"w_bits": 4}}}')
    with pytest.raises(ConfigError, match="does not exist"):
        named_config("paper", f)


def is_pow2(x: torch.Tensor) -> bool:
    vals = x.detach().reshape(-1).tolist()
    return len(vals) > 0 and all(v > 0 and math.frexp(v)[0] == 0.5 for v in vals)


@pytest.mark.parametrize("arch", ["paper", "vgg"])
def test_every_quantizer_scale_is_a_power_of_two(arch):
    torch.manual_seed(0)
    model = build(quantized_twin(named_config(arch)))
    model.train()
    for _ in range(4):  # activation scales are learned from runtime statistics in training mode
        model(torch.rand(2, 3, 64, 64) * 0.9)
    model.eval()
    seen: dict = {}

    def keep(mod, inp, out):
        seen[mod] = (inp, out)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if type(m).__name__.startswith("Quant")]
    hooks += [m.bias_quant.register_forward_hook(keep) for m in model.weighted]
    with torch.no_grad():
        model(torch.randint(0, 256, (2, 3, 64, 64)).float() / 256)
    for h in hooks:
        h.remove()

    assert float(seen[model.inp][1].scale) == 2.0 ** -8  # contract rule 2
    acts = [m for m in model.modules() if type(m).__name__ == "QuantReLU"]
    assert len(acts) == len(model.weighted) - 1
    for m in acts:
        assert is_pow2(seen[m][1].scale), f"{m}: activation scale {seen[m][1].scale}"
    for m, spec in zip(model.weighted, [l for l in model.config.layers if l.kind in ("conv", "linear")]):
        qw = m.quant_weight()
        assert is_pow2(qw.scale), f"weight scale {qw.scale}"
        assert int(qw.bit_width) == spec.w_bits
        s_in = seen[m][0][0].scale
        assert is_pow2(s_in)
        qb = seen[m.bias_quant][1]
        assert int(qb.bit_width) == 32  # rule 3: Int32Bias, scale s_in * s_w
        assert torch.equal(qb.scale.reshape(-1), (s_in * qw.scale).reshape(-1))
        ints = qb.value / qb.scale
        assert torch.equal(ints, ints.round())


def test_named_architectures_are_description_files():
    from quant.model import arch_files
    assert {"paper", "paper-nopool2", "vgg", "edge"} <= set(arch_files())
    edge = named_config("edge")
    convs = [l for l in edge.layers if l.kind == "conv"]
    assert all(l.padding == "same" and l.bn and l.per_channel for l in convs)
    assert shapes(edge)[-4:] == [(128, 8, 8), (128, 1, 1), (128,), (5,)]
    wide = named_config("edge-wide")  # edge's layers at other widths (README: 211,780 weights, within 2.5 Mbit)
    assert [l.kind for l in wide.layers] == [l.kind for l in edge.layers]
    assert [l.out for l in wide.layers if l.kind == "conv"] == [12, 32, 48, 64, 96, 128]
    weights = sum(p.numel() for n, p in build(wide).named_parameters() if n.endswith("weight") and p.dim() > 1)
    assert weights == 211_780 and weights * 8 + 2 * 12 * 64 * 64 * 8 <= 2.5e6


def _arch(tmp_path, layers, **top):
    import json
    f = tmp_path / "net.json"
    f.write_text(json.dumps({"layers": layers, **top}))
    return f


def test_an_architecture_file_builds_and_trains_the_vocabulary(tmp_path):
    f = _arch(tmp_path, [{"kind": "conv", "out": 4, "kernel": 3, "padding": "same", "stride": 2, "bn": True, "per_channel": True},
                         {"kind": "avgpool", "kernel": 2}, {"kind": "conv", "out": 8, "kernel": 3, "padding": 1},
                         {"kind": "maxpool", "kernel": 2}, {"kind": "gap"}, {"kind": "flatten"},
                         {"kind": "linear", "out": 5, "relu": False}])
    cfg = named_config(str(f))
    assert cfg.arch == "net" and shapes(cfg) == [(4, 32, 32), (4, 16, 16), (8, 16, 16), (8, 8, 8), (8, 1, 1), (8,), (5,)]
    for q in (False, True):
        c = quantized_twin(cfg) if q else cfg
        with torch.no_grad():
            assert build(c).eval()(torch.rand(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.parametrize("layers, match", [
    ([{"kind": "conv", "out": 4, "kernal": 3}], r"layer 0 \(conv\): unknown field 'kernal'"),
    ([{"kind": "conv", "out": 4, "kernel": 4, "padding": "same"}], r"layer 0 \(conv\): field 'padding' \"same\" needs an odd kernel"),
    ([{"kind": "conv", "out": 4, "kernel": 3, "padding": 3}], r"layer 0 \(conv\): field 'padding'"),
    ([{"kind": "conv", "out": "four", "kernel": 3}], r"layer 0 \(conv\): field 'out' has the wrong type"),
    ([{"kind": "maxpool", "kernel": 2, "out": 3}], r"layer 0 \(maxpool\): unknown field 'out'"),
    ([{"kind": "avgpool", "kernel": 1}], r"layer 0 \(avgpool\): field 'kernel' must be an integer >= 2"),
    ([{"kind": "conv", "out": 4, "kernel": 3}, {"kind": "globalavgpool"}, {"kind": "conv", "out": 4, "kernel": 3}],
     r"layer 2 \(conv\): the feature map shrinks"),
    ([{"kind": "softmax"}], r"layer 0: unknown kind 'softmax'"),
])
def test_a_bad_architecture_file_names_the_layer_and_the_field(tmp_path, layers, match):
    f = _arch(tmp_path, layers + [{"kind": "flatten"}, {"kind": "linear", "out": 5, "relu": False}])
    with pytest.raises(ConfigError, match=match):
        named_config(str(f))


def test_an_unreadable_architecture_file_is_one_error(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a valid architecture file"):
        named_config(str(f))
    with pytest.raises(ConfigError, match="unknown architecture 'nope'"):
        named_config("nope")


def test_a_malformed_yaml_architecture_is_one_error_naming_the_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("arch: x\nlayers: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not a valid architecture file \(expected the node content, but found '<stream end>', line 3\)$"):
        named_config(str(f))


def folds_exactly(cfg, fl) -> dict:
    """Train-mode passes move the float model's batch-norm statistics; its folded twin gives the same
    logits. Returns the folded state dict."""
    from quant.fold import fold_batchnorm
    fl.train()
    for _ in range(3):  # running statistics away from their initial values
        fl(torch.rand(4, *cfg.in_shape))
    fl.eval()
    folded_cfg, state = fold_batchnorm(cfg, fl.state_dict())
    folded = build(folded_cfg).eval()
    folded.load_state_dict(state)
    x = torch.rand(3, *cfg.in_shape)
    with torch.no_grad():
        assert torch.allclose(fl(x), folded(x), atol=1e-4)
    return state


def test_batch_norm_folds_exactly_and_the_quantized_model_refuses_it_unfolded():
    from dataclasses import replace

    torch.manual_seed(0)
    cfg = named_config("edge")
    state = folds_exactly(cfg, build(cfg))
    assert not any("running_mean" in k for k in state)
    with pytest.raises(ConfigError, match="fold it"):
        build(replace(cfg, quantized=True))


def test_resnet8_is_mlperf_tinys_reference_and_its_residual_blocks_fold_and_quantize():
    """conv 16, three stacks of two 3x3 convs (16/32/64, strides 1/2/2; identity shortcut first, 1x1
    stride-2 conv shortcuts after), global average pool, linear 10: 78k parameters."""
    from quant.layers import ResidualBlock
    torch.manual_seed(0)
    cfg = named_config("resnet8")
    assert cfg.in_shape == (3, 32, 32) and cfg.num_classes == 10
    assert shapes(cfg) == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64, 1, 1), (64,), (10,)]
    fl = build(cfg)
    assert sum(p.numel() for p in fl.parameters() if p.dim() > 1) == 77_360  # conv and linear weights
    blocks = [m for m in fl.modules() if isinstance(m, ResidualBlock)]
    assert [isinstance(b.shortcut, torch.nn.Identity) for b in blocks] == [True, False, False]
    state = folds_exactly(cfg, fl)
    q = build(quantized_twin(cfg))
    missing, unexpected = q.load_state_dict(state, strict=False)
    assert not unexpected and all(k not in state for k in missing)
    q.train()
    for _ in range(3):
        q(torch.rand(4, 3, 32, 32))
    q.eval()
    seen = []

    def keep(mod, inp, out) -> None:  # a hook that returns nothing leaves the module's output alone
        seen.append(out)

    hooks = [b.join.register_forward_hook(keep) for b in q.modules() if isinstance(b, ResidualBlock)]
    with torch.no_grad():
        assert q(torch.randint(0, 256, (2, 3, 32, 32)).float() / 256).shape == (2, 10)
    for h in hooks:
        h.remove()
    scales = [float(o.scale) for o in seen]
    assert len(scales) == 6 and all(is_pow2(torch.tensor(s)) for s in scales)
    assert scales[0::2] == scales[1::2]  # both summands of each add at one scale (contract rule 13)


@pytest.mark.parametrize("layer, match", [
    ({"kind": "residual", "out": 8, "stride": 3}, "'stride' must be 1 or 2"),
    ({"kind": "residual", "out": 0}, "'out' must be a positive integer"),
    ({"kind": "residual", "out": 8, "kernel": 5}, "unknown field 'kernel'"),
])
def test_a_bad_residual_block_names_the_field(tmp_path, layer, match):
    f = _arch(tmp_path, [layer, {"kind": "gap"}, {"kind": "flatten"}, {"kind": "linear", "out": 5, "relu": False}])
    with pytest.raises(ConfigError, match=match):
        named_config(str(f))


def test_a_description_may_name_its_pe_array():
    """`array`: the PE array the chain builds for the model by default (its hardware folding);
    resnet8's names 16x5; a malformed one is one line naming the field."""
    assert named_config("resnet8").array == "16x5" and named_config("paper").array is None
    d = {"layers": [{"kind": "flatten"}, {"kind": "linear", "out": 5, "relu": False}], "array": "12x7/2"}
    assert ModelConfig.from_dict(d, "m.json", strict=True).array == "12x7/2"
    for bad in ("auto", "10 x 9", 16):
        with pytest.raises(ConfigError, match=r"m.json: field 'array' must be a PE array RxC or RxC/L"):
            ModelConfig.from_dict({**d, "array": bad}, "m.json")
