"""The backbone registry: every pretrained network bakeoff can compare, as data.

A backbone is a row in ``REGISTRY``, not a code path: which ``keras.applications`` builder makes it, how it
wants its pixels, how small an input it accepts, how wide its pooled vector is, and where fine-tuning may cut
in (the names of its blocks, bottom to top). ``build_feature_extractor`` turns a row plus resolved weights into a
Keras model that takes raw RGB pixels and returns one pooled vector per image, with the preprocessing inside the
model, so every later step (features, fine-tuning, serving) feeds it the same 0..255 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bakeoff.errors import BakeoffError

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from bakeoff.weights import ResolvedWeights

# Per-channel statistics the pretrained networks were trained with.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """One registry entry. ``preprocess_mode`` says what the ImageNet weights expect:
    ``caffe`` (BGR minus mean), ``tf`` (scaled to -1..1) or ``builtin`` (the network rescales by itself)."""

    name: str
    application: str  # keras.applications callable, e.g. "MobileNetV2"
    module: str  # keras.applications submodule holding its preprocess_input, e.g. "mobilenet_v2"
    default_size: int
    min_size: int
    feature_dim: int
    finetune_blocks: tuple[str, ...]  # layer-name prefixes of the blocks, bottom to top
    cut_layer: str | None = None  # take features from this layer instead of the top (e.g. "mixed7")
    # intermediate layers whose pooled output is extracted in the same forward pass and searched as feature sets
    # (they transfer better than the top to data far from ImageNet); bottom to top, each below the cut
    taps: tuple[str, ...] = ()
    builtin_preprocessing: bool = False
    preprocess_mode: str = "tf"
    description: str = ""
    # measured faster in bfloat16 than float32 on CPUs with AVX512-BF16/AMX, head accuracy unchanged within noise
    # (python -m benchmarks.precision; docs/benchmarks.md): `--precision auto` extracts it in bfloat16 there
    bfloat16_faster: bool = False


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (mixed float16 fine-tuning, bfloat16 features: both decided per device)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _numbered(prefix: str, first: int, last: int, suffix: str = "") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}{suffix}" for i in range(first, last + 1))


_ENTRIES = (
    Backbone(
        "vgg16",
        "VGG16",
        "vgg16",
        224,
        32,
        512,
        _numbered("block", 1, 5),
        preprocess_mode="caffe",
        taps=("block4_pool",),
        description="VGG16 (notebook baseline), 13 conv layers",
        bfloat16_faster=True,
    ),
    Backbone(
        "resnet50",
        "ResNet50",
        "resnet",
        224,
        32,
        2048,
        _numbered("conv", 1, 5),
        preprocess_mode="caffe",
        taps=("conv4_block6_out",),
        description="ResNet50 (notebook baseline)",
    ),
    Backbone(
        "inception_v3",
        "InceptionV3",
        "inception_v3",
        299,
        75,
        2048,
        _numbered("mixed", 0, 10),
        taps=("mixed7",),
        description="InceptionV3 (notebook baseline), full depth",
    ),
    Backbone(
        "inception_v3_mixed7",
        "InceptionV3",
        "inception_v3",
        299,
        75,
        768,
        _numbered("mixed", 0, 7),
        cut_layer="mixed7",
        description="InceptionV3 cut at mixed7, as one notebook did",
    ),
    Backbone(
        "mobilenet_v2",
        "MobileNetV2",
        "mobilenet_v2",
        224,
        32,
        1280,
        ("Conv1", "expanded_conv") + _numbered("block_", 1, 16) + ("Conv_1",),
        taps=("block_13_expand_relu",),
        description="MobileNetV2 1.0; offline ImageNet weights via `bakeoff weights import mobilenet_v2`",
    ),
    Backbone(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        "mobilenet_v3",
        224,
        32,
        576,
        _numbered("expanded_conv_", 1, 10) + ("conv_1",),
        builtin_preprocessing=True,
        preprocess_mode="builtin",
        description="MobileNetV3 small (fastest)",
    ),
    Backbone(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        "mobilenet_v3",
        224,
        32,
        960,
        _numbered("expanded_conv_", 1, 14) + ("conv_1",),
        builtin_preprocessing=True,
        preprocess_mode="builtin",
        description="MobileNetV3 large",
    ),
    Backbone(
        "efficientnet_v2_b0",
        "EfficientNetV2B0",
        "efficientnet_v2",
        224,
        32,
        1280,
        _numbered("block", 1, 6) + ("top",),
        builtin_preprocessing=True,
        preprocess_mode="builtin",
        description="EfficientNetV2-B0",
    ),
    Backbone(
        "convnext_tiny",
        "ConvNeXtTiny",
        "convnext",
        224,
        32,
        768,
        _numbered("convnext_tiny_stage_", 0, 3),
        builtin_preprocessing=True,
        preprocess_mode="builtin",
        description="ConvNeXt-Tiny (slow on CPU)",
    ),
)

REGISTRY: dict[str, Backbone] = {b.name: b for b in _ENTRIES}


def list_backbones() -> list[str]:
    return list(REGISTRY)


def get_backbone(name: str | Backbone) -> Backbone:
    """Look a backbone up by name; unknown names fail with the list of known ones."""
    if isinstance(name, Backbone):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise BakeoffError(f"unknown backbone {name!r}; known: {', '.join(REGISTRY)}") from None


def _preprocessing_layers(mode: str):
    """Stock Keras layers that turn raw 0..255 RGB into what the weights expect (saved .keras needs no custom code)."""
    import keras
    import numpy as np

    if mode in ("builtin", "none"):
        return []
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "torch":
        mean = [255.0 * m for m in TORCH_MEAN]
        var = [(255.0 * s) ** 2 for s in TORCH_STD]
        return [keras.layers.Normalization(mean=mean, variance=var, name="preprocess_torch")]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction as one frozen 1x1 convolution.
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_channel, in_channel in enumerate((2, 1, 0)):
            kernel[0, 0, in_channel, out_channel] = 1.0
        bias = -np.asarray(CAFFE_BGR_MEAN, dtype="float32")
        conv = keras.layers.Conv2D(
            3,
            1,
            name="preprocess_caffe",
            trainable=False,
            kernel_initializer=keras.initializers.Constant(kernel),
            bias_initializer=keras.initializers.Constant(bias),
        )
        return [conv]
    raise BakeoffError(f"unknown preprocessing mode {mode!r}")


def _check_size(bb: Backbone, image_size: int) -> None:
    if image_size < bb.min_size:
        raise BakeoffError(f"{bb.name} needs --image-size >= {bb.min_size}, got {image_size}")


def build_application(
    backbone: str | Backbone, weights: ResolvedWeights, image_size: int | None = None, include_top: bool = False
) -> keras.Model:
    """The bare keras.applications network with the resolved weights loaded (no preprocessing, no pooling).

    ``include_top`` loads the weights' ``top_path`` (the ``_top`` variant in a mirror; used to prove an import on
    ImageNet classes).
    """
    bb = get_backbone(backbone)
    size = int(image_size or bb.default_size)
    _check_size(bb, size)
    # the file to load, resolved before Keras is imported or the network built, so a missing classifier fails at once
    path = weights.top_weights() if include_top and weights.local_path is not None else weights.local_path
    import keras

    builder = getattr(keras.applications, bb.application)
    kwargs = {"include_top": include_top, "input_shape": (size, size, 3)}
    if bb.builtin_preprocessing:
        kwargs["include_preprocessing"] = True
    keras_download = weights.pretrained and path is None
    try:
        app = builder(weights="imagenet" if keras_download else None, **kwargs)
    except Exception as exc:  # offline download failures surface here as many exception types
        if not keras_download:
            raise
        raise BakeoffError(
            f"cannot download Keras ImageNet weights for {bb.name} ({type(exc).__name__}); offline? "
            f"set BAKEOFF_WEIGHTS_URI to a mirror (`bakeoff weights import`) or pass --weights none"
        ) from exc
    if weights.bn_epsilon is not None:
        for layer in app.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.epsilon = float(weights.bn_epsilon)
    if path is not None:
        try:
            app.load_weights(path)
        except Exception as exc:
            raise BakeoffError(
                f"weights {weights.spec} ({path}) do not fit {bb.name}: {exc}".replace("\n", " ")
            ) from exc
    return app


def _layer_output(app, bb: Backbone, name: str):
    try:
        return app.get_layer(name).output
    except ValueError:
        raise BakeoffError(f"{bb.name} has no layer {name!r} to cut at") from None


def build_feature_extractor(
    backbone: str | Backbone,
    weights: ResolvedWeights,
    image_size: int | None = None,
    cut: str | None = None,
    taps: tuple[str, ...] = (),
) -> keras.Model:
    """Raw RGB (float32 0..255, [None, S, S, 3]) -> pooled bottleneck vector [None, feature_dim].

    The pretrained network is nested as the layer named ``backbone`` so fine-tuning can unfreeze by layer name.
    With ``taps`` the model has one output per layer, ``[cut or top, *taps]``, each global-average-pooled, all from
    ONE forward pass (extraction only: a servable model has a single output, cut at the chosen tap).
    """
    import keras

    bb = get_backbone(backbone)
    size = int(image_size or bb.default_size)
    app = build_application(bb, weights, size, include_top=False)
    cut = cut or bb.cut_layer
    outs = [_layer_output(app, bb, cut) if cut else app.output] + [_layer_output(app, bb, t) for t in taps]
    base = keras.Model(app.inputs, outs if taps else outs[0], name="backbone")
    mode = "torch" if weights.preprocessing == "torch" else bb.preprocess_mode
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    x = inputs
    for layer in _preprocessing_layers(mode):
        x = layer(x)
    x = base(x, training=False)
    if taps:
        pooled = [keras.layers.GlobalAveragePooling2D(name=f"pool_{n}")(y) for n, y in zip(["top", *taps], x)]
        return keras.Model(inputs, pooled, name=f"{bb.name}_features")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=f"{bb.name}_features")


def _matches(name: str, prefix: str) -> bool:
    """``block1`` matches ``block1_conv1`` and ``block1a_...`` but never ``block10...``."""
    return name.startswith(prefix) and (len(name) == len(prefix) or not name[len(prefix)].isdigit())


def block_spans(backbone: str | Backbone, base: keras.Model) -> list[tuple[str, list]]:
    """Partition ``base``'s layers into the registry's blocks: a block ends at the last layer matching its prefix;
    the top block also takes the weightless tail (e.g. the final activation). A base cut at a tap has only the
    blocks below the cut; the block holding the cut layer is then its top block."""
    bb = get_backbone(backbone)
    layers = list(base.layers)
    ends, prefixes = [], list(bb.finetune_blocks)
    found = [[i for i, layer in enumerate(layers) if _matches(layer.name, prefix)] for prefix in prefixes]
    while len(found) > 1 and not found[-1]:  # a base cut at a tap lacks the blocks above it
        found.pop()
        prefixes.pop()
    for prefix, idx in zip(prefixes, found):
        if not idx:
            raise BakeoffError(f"{bb.name}: no layer matches fine-tune block {prefix!r}")
        ends.append(idx[-1])
    if any(b <= a for a, b in zip(ends, ends[1:])):
        raise BakeoffError(f"{bb.name}: fine-tune blocks are not in bottom-to-top order")
    spans, start = [], 0
    for k, (prefix, end) in enumerate(zip(prefixes, ends)):
        stop = len(layers) if k == len(ends) - 1 else end + 1
        spans.append((prefix, layers[start:stop]))
        start = end + 1
    return spans


def finetune_layers(backbone: str | Backbone, base: keras.Model, blocks: int) -> list:
    """The layers of the last ``blocks`` blocks (BatchNorm included; the caller keeps those frozen)."""
    spans = block_spans(backbone, base)
    if blocks < 0 or blocks > len(spans):
        raise BakeoffError(f"--blocks must be 0..{len(spans)} for {get_backbone(backbone).name}, got {blocks}")
    if blocks == 0:
        return []
    return [layer for _, layers in spans[-blocks:] for layer in layers]
