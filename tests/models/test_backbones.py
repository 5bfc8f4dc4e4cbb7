"""The backbone registry: every entry builds, outputs its feature_dim, and names its fine-tuning blocks right."""

from __future__ import annotations

import numpy as np
import pytest

from bakeoff import backbones
from bakeoff.errors import BakeoffError
from bakeoff.weights import resolve_weights

FAST = ["vgg16", "mobilenet_v2", "mobilenet_v3_small", "inception_v3_mixed7", "efficientnet_v2_b0"]
SLOW = [name for name in backbones.list_backbones() if name not in FAST]


def test_registry_has_the_notebook_and_modern_backbones():
    names = set(backbones.list_backbones())
    assert {
        "vgg16",
        "resnet50",
        "inception_v3",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_v2_b0",
        "convnext_tiny",
    } <= names
    cut = backbones.get_backbone("inception_v3_mixed7")
    assert cut.cut_layer == "mixed7" and cut.application == "InceptionV3"
    for bb in backbones.REGISTRY.values():
        assert bb.min_size <= bb.default_size and bb.feature_dim > 0 and bb.finetune_blocks


def test_unknown_backbone_lists_known_names():
    with pytest.raises(BakeoffError, match="known: vgg16"):
        backbones.get_backbone("alexnet")


def _check_entry(name: str) -> None:
    bb = backbones.get_backbone(name)
    model = backbones.build_feature_extractor(bb, resolve_weights(name, "none"), bb.min_size)
    x = np.random.default_rng(0).uniform(0, 255, (2, bb.min_size, bb.min_size, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    assert out.shape == (2, bb.feature_dim)
    assert np.isfinite(out).all()
    base = model.get_layer("backbone")
    spans = backbones.block_spans(bb, base)
    assert [prefix for prefix, _ in spans] == list(bb.finetune_blocks)
    assert all(layers for _, layers in spans)
    top = backbones.finetune_layers(bb, base, 1)
    assert any(backbones._matches(layer.name, bb.finetune_blocks[-1]) for layer in top)
    assert not any(backbones._matches(layer.name, bb.finetune_blocks[-2]) for layer in top)
    # every weighted layer of the network belongs to exactly one block
    everything = backbones.finetune_layers(bb, base, len(bb.finetune_blocks))
    assert len({id(layer) for layer in everything}) == len(everything)
    assert {id(layer) for layer in base.layers if layer.weights} <= {id(layer) for layer in everything}


@pytest.mark.parametrize("name", FAST)
def test_entry_builds_at_min_size_with_feature_dim(name):
    _check_entry(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slow_entry_builds_at_min_size_with_feature_dim(name):
    _check_entry(name)


def test_finetune_layers_pick_the_last_blocks_by_name():
    bb = backbones.get_backbone("vgg16")
    base = backbones.build_feature_extractor(bb, resolve_weights("vgg16", "none"), 32).get_layer("backbone")
    assert {layer.name for layer in backbones.finetune_layers(bb, base, 1)} == {
        "block5_conv1",
        "block5_conv2",
        "block5_conv3",
        "block5_pool",
    }
    two = {layer.name for layer in backbones.finetune_layers(bb, base, 2)}
    assert {"block4_conv1", "block5_conv3"} <= two and not any(n.startswith("block3") for n in two)
    assert backbones.finetune_layers(bb, base, 0) == []
    with pytest.raises(BakeoffError, match="--blocks must be 0..5"):
        backbones.finetune_layers(bb, base, 6)


def test_mobilenet_v2_top_block_includes_batchnorm_and_tail():
    bb = backbones.get_backbone("mobilenet_v2")
    base = backbones.build_feature_extractor(bb, resolve_weights(bb.name, "none"), 32).get_layer("backbone")
    names = [layer.name for layer in backbones.finetune_layers(bb, base, 2)]
    assert names[0].startswith("block_16_") and {"Conv_1", "Conv_1_bn", "out_relu"} <= set(names)
    assert "block_1_expand" not in names  # block_1 must not match block_16


def test_size_below_minimum_is_a_one_line_error():
    with pytest.raises(BakeoffError, match="inception_v3 needs --image-size >= 75"):
        backbones.build_feature_extractor("inception_v3", resolve_weights("inception_v3", "none"), 64)


def test_cut_point_changes_the_output_layer():
    model = backbones.build_feature_extractor(
        "mobilenet_v2", resolve_weights("mobilenet_v2", "none"), 32, cut="block_6_project_BN"
    )
    assert model.output.shape[-1] == 64
    with pytest.raises(BakeoffError, match="no layer 'nope'"):
        backbones.build_feature_extractor("mobilenet_v2", resolve_weights("mobilenet_v2", "none"), 32, cut="nope")


def test_a_base_cut_at_a_tap_fine_tunes_its_own_top_blocks():
    """VGG16 cut at block4_pool has no block5: its top block is block4, so fine-tuning 1 block opens block4."""
    bb = backbones.get_backbone("vgg16")
    assert bb.taps == ("block4_pool",)
    model = backbones.build_feature_extractor(bb, resolve_weights("vgg16", "none"), 32, cut="block4_pool")
    assert model.output.shape[-1] == 512
    names = [layer.name for layer in backbones.finetune_layers(bb, model.get_layer("backbone"), 1)]
    assert names == ["block4_conv1", "block4_conv2", "block4_conv3", "block4_pool"]
    multi = backbones.build_feature_extractor(bb, resolve_weights("vgg16", "none"), 32, taps=bb.taps)
    assert [tuple(o.shape) for o in multi.outputs] == [(None, 512), (None, 512)]


def test_caffe_preprocessing_layer_matches_keras_preprocess_input():
    import keras

    model = backbones.build_feature_extractor("vgg16", resolve_weights("vgg16", "none"), 32)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    inside = keras.Model(model.input, model.get_layer("preprocess_caffe").output).predict(x, verbose=0)
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(inside, expected, rtol=1e-5, atol=1e-3)


def test_tf_preprocessing_layer_matches_keras_preprocess_input():
    import keras

    model = backbones.build_feature_extractor("mobilenet_v2", resolve_weights("mobilenet_v2", "none"), 32)
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    inside = keras.Model(model.input, model.get_layer("preprocess_tf").output).predict(x, verbose=0)
    np.testing.assert_allclose(inside, keras.applications.mobilenet_v2.preprocess_input(x.copy()), atol=1e-5)


def test_saved_extractor_loads_without_custom_objects(tmp_path, weights_mirror):
    import keras

    resolved = resolve_weights("mobilenet_v2", "imagenet", mirror=weights_mirror)
    model = backbones.build_feature_extractor("mobilenet_v2", resolved, 48)
    assert model.get_layer("preprocess_torch") is not None
    path = tmp_path / "fe.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(3).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    eps = {
        layer.epsilon
        for layer in loaded.get_layer("backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert eps == {1e-5}  # torchvision epsilon survives saving
