"""Official checkpoint names -> paths of our Flax variables (docs/model.md#checkpoint-keys).

Every source flavour is first renamed to one canonical naming (detectron2's, which the IFC
checkpoints use); one rule table then maps canonical names to variable paths such as
`params/encoder/encode_receive_0/self_attn/query/kernel`, with the layout change each needs:

  linear    torch Linear (out, in)          -> Dense kernel (in, out)
  conv      torch Conv2d OIHW (depthwise (C, 1, k, k) too) -> HWIO
  in_proj   packed (3C, C) / (3C,) rows [q; k; v] -> separate query / key / value Dense layers
  copy      as is (biases, norm affines, BN statistics, embeddings, memory tokens)

Flavours (which config goes with which source is in ifc_jax/convert/convert.py):
  ifc          the authors' IFC checkpoints: `detr.*`, backbone under `detr.backbone.0.backbone.`
  detectron2   backbone-only detectron2 names (`stem.conv1.weight`, `res2.0.conv1.norm.*`), e.g.
               ImageNetPretrained/torchvision/R-50.pkl written by convert-torchvision-to-d2.py
  torchvision  torchvision ResNet state dicts (`conv1`, `bn1`, `layer1.0.downsample.0`, `fc`)
  caffe2       MSRA/Caffe2 ImageNet models (`conv1_w`, `res_conv1_bn_s`, `res2_0_branch2a_w`,
               `res2_0_branch2a_bn_s/_b`, `res2_0_branch1_w`, `fc1000_w`): BN is an affine
               y = s*x + b; we store it as scale s, bias b, mean 0, var 1 - eps, so our frozen BN
               computes s*x + b (detectron2's loading may leave var at 1, i.e. s/sqrt(1+eps):
               at most 5e-6 relative difference either way).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

IFC_BACKBONE_PREFIX = "detr.backbone.0.backbone."
QKV = ("query", "key", "value")

# Keys that are read and deliberately not converted, with the reason shown to the user.
IGNORED: tuple[tuple[str, str], ...] = (
    (r"criterion\.empty_weight", "class weights of the training loss (no-object 0.1)"),
    (r".*num_batches_tracked", "BatchNorm update counter"),
    (r"(stem\.)?fc\.(weight|bias)|fc1000_[wb]", "ImageNet classifier"),
    (r".*_momentum", "Caffe2 optimizer state"),
)


@dataclass(frozen=True)
class Layout:
    """How one source array becomes its target array(s), and the source shape it needs."""

    name: str
    forward: Callable[[np.ndarray], list[np.ndarray]]
    source_shape: Callable[[tuple[int, ...]], tuple[int, ...]]  # from a target shape


def _split3(x: np.ndarray) -> list[np.ndarray]:
    return list(np.split(x, 3, axis=0))


LAYOUTS = {
    "copy": Layout("copy", lambda x: [x], lambda t: t),
    "linear": Layout("linear", lambda x: [x.T], lambda t: t[::-1]),
    "conv": Layout("conv", lambda x: [x.transpose(2, 3, 1, 0)],
                   lambda t: (t[3], t[2], t[0], t[1])),
    "in_proj_weight": Layout("in_proj_weight", lambda x: [p.T for p in _split3(x)],
                             lambda t: (3 * t[1], t[0])),
    "in_proj_bias": Layout("in_proj_bias", _split3, lambda t: (3 * t[0],)),
}

PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "s": r"[2-5]", "conv": r"conv[123]|shortcut",
                "n": r"[123]", "adapter": r"[12]"}


@functools.cache
def _compile(template: str) -> re.Pattern:
    """A template such as `res{s}.{j}.{conv}.weight` as a regex with one group per field."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = ""
    for index, part in enumerate(parts):
        if index % 2:
            alternatives = "|".join(QKV) if part == "qkv" else PLACEHOLDERS[part]
            pattern += f"(?P<{part}>{alternatives})"
        else:
            pattern += re.escape(part)
    return re.compile(pattern)


@dataclass(frozen=True)
class Rule:
    """source template <-> target template; `{qkv}` in a target means three targets."""

    source: str
    target: str
    layout: str

    def match_source(self, key: str) -> list[str] | None:
        """The target path(s) of a source key, or None if this rule does not apply."""
        found = _compile(self.source).fullmatch(key)
        if not found:
            return None
        values = found.groupdict()
        if "{qkv}" in self.target:
            return [self.target.format(qkv=part, **values) for part in QKV]
        return [self.target.format(**values)]

    def match_target(self, path: str) -> str | None:
        """The source key that fills a target path, or None."""
        found = _compile(self.target).fullmatch(path)
        if not found:
            return None
        values = {k: v for k, v in found.groupdict().items() if k != "qkv"}
        return self.source.format(**values)


def _linear(src: str, dst: str) -> list[Rule]:
    return [Rule(f"{src}.weight", f"{dst}/kernel", "linear"),
            Rule(f"{src}.bias", f"{dst}/bias", "copy")]


def _conv(src: str, dst: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{src}.weight", f"{dst}/kernel", "conv")]
    return rules + ([Rule(f"{src}.bias", f"{dst}/bias", "copy")] if bias else [])


def _norm(src: str, dst: str) -> list[Rule]:
    return [Rule(f"{src}.weight", f"{dst}/scale", "copy"),
            Rule(f"{src}.bias", f"{dst}/bias", "copy")]


def _attention(src: str, dst: str) -> list[Rule]:
    return [Rule(f"{src}.in_proj_weight", f"{dst}/{{qkv}}/kernel", "in_proj_weight"),
            Rule(f"{src}.in_proj_bias", f"{dst}/{{qkv}}/bias", "in_proj_bias"),
            *_linear(f"{src}.out_proj", f"{dst}/out")]


def _conv_frozen_bn(src: str, dst: str) -> list[Rule]:
    """detectron2 Conv2d(norm=FrozenBN): conv weight + BN affine (params) and stats."""
    stats = dst.replace("params/", "batch_stats/", 1)
    return [Rule(f"{src}.weight", f"{dst}/conv/kernel", "conv"),
            *_norm(f"{src}.norm", f"{dst}/norm"),
            Rule(f"{src}.norm.running_mean", f"{stats}/norm/mean", "copy"),
            Rule(f"{src}.norm.running_var", f"{stats}/norm/var", "copy")]


def backbone_rules(prefix: str = "") -> list[Rule]:
    """detectron2 ResNet names (after `prefix`) -> params/backbone and batch_stats/backbone."""
    return [*_conv_frozen_bn(f"{prefix}stem.conv1", "params/backbone/stem_conv1"),
            *_conv_frozen_bn(f"{prefix}res{{s}}.{{j}}.{{conv}}",
                             "params/backbone/res{s}_{j}/{conv}")]


def _encoder_layer(src: str, dst: str) -> list[Rule]:
    return [*_attention(f"{src}.self_attn", f"{dst}/self_attn"),
            *_linear(f"{src}.linear1", f"{dst}/ffn/linear1"),
            *_linear(f"{src}.linear2", f"{dst}/ffn/linear2"),
            *_norm(f"{src}.norm1", f"{dst}/norm1"), *_norm(f"{src}.norm2", f"{dst}/norm2")]


def ifc_rules() -> list[Rule]:
    """The whole IFC model (docs/model.md#checkpoint-keys)."""
    transformer, head = "detr.transformer", "detr.mask_head"
    decoder_layer = f"{transformer}.clip_decoder.layers.{{i}}"
    return [
        *backbone_rules(IFC_BACKBONE_PREFIX),
        *_conv("detr.input_proj", "params/input_proj"),
        Rule(f"{transformer}.memory_bus", "params/encoder/memory_tokens", "copy"),
        Rule(f"{transformer}.memory_pos", "params/encoder/memory_position", "copy"),
        *_encoder_layer(f"{transformer}.encoder.enc_layers.{{i}}",
                        "params/encoder/encode_receive_{i}"),
        *_encoder_layer(f"{transformer}.encoder.bus_layers.{{i}}",
                        "params/encoder/gather_communicate_{i}"),
        *_encoder_layer(decoder_layer, "params/decoder/layers_{i}"),  # self_attn, FFN, norm1/2
        *_attention(f"{decoder_layer}.multihead_attn", "params/decoder/layers_{i}/cross_attn"),
        *_norm(f"{decoder_layer}.norm3", "params/decoder/layers_{i}/norm3"),
        *_norm(f"{transformer}.clip_decoder.norm", "params/decoder/norm"),
        Rule("detr.query_embed.weight", "params/query_embed", "copy"),
        *_linear("detr.class_embed.layers.{j}", "params/class_embed/layers_{j}/dense"),
        *_linear(f"{head}.convert_to_weight.layers.{{j}}", "params/mask_kernel/layers_{j}/dense"),
        *_conv(f"{head}.lay{{n}}", "params/spatial_decoder/lay{n}"),
        *_norm(f"{head}.gn{{n}}", "params/spatial_decoder/gn{n}"),
        *_conv(f"{head}.adapter{{adapter}}", "params/spatial_decoder/adapter{adapter}"),
        *_conv(f"{head}.out_lay.depthwise", "params/spatial_decoder/out_depthwise"),
        *_conv(f"{head}.out_lay.pointwise", "params/spatial_decoder/out_pointwise"),
    ]


def ignored_reason(key: str) -> str | None:
    for pattern, reason in IGNORED:
        if re.fullmatch(pattern, key):
            return reason
    return None


def detect_flavour(keys: list[str]) -> str | None:
    """'ifc', 'detectron2', 'torchvision', 'caffe2' or None (unrecognised)."""
    names = set(keys)
    if any(key.startswith("detr.") for key in names):
        return "ifc"
    if "stem.conv1.weight" in names or any(key.startswith("res2.0.") for key in names):
        return "detectron2"
    if "conv1.weight" in names or any(key.startswith("layer1.0.") for key in names):
        return "torchvision"
    if "conv1_w" in names or any(key.startswith("res2_0_") for key in names):
        return "caffe2"
    return None


def torchvision_to_detectron2(key: str) -> str:
    """torchvision ResNet name -> detectron2 name (unknown names are returned unchanged)."""
    if re.fullmatch(r"conv1\.weight", key):
        return "stem.conv1.weight"
    if found := re.fullmatch(r"bn1\.(\w+)", key):
        return f"stem.conv1.norm.{found[1]}"
    if found := re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key):
        stage, block, rest = int(found[1]) + 1, found[2], found[3]
        rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
        rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
        rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
        return f"res{stage}.{block}.{rest}"
    return key


_CAFFE2_BRANCHES = {"branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3",
                    "branch1": "shortcut"}
_CAFFE2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}


def caffe2_to_detectron2(key: str) -> str:
    """Caffe2/MSRA blob name -> detectron2 name (unknown names are returned unchanged)."""
    if key == "conv1_w":
        return "stem.conv1.weight"
    if found := re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", key):
        return f"stem.conv1.norm.{_CAFFE2_BN[found[1]]}"
    if found := re.fullmatch(r"res(\d)_(\d+)_(branch2[abc]|branch1)_w", key):
        return f"res{found[1]}.{found[2]}.{_CAFFE2_BRANCHES[found[3]]}.weight"
    if found := re.fullmatch(r"res(\d)_(\d+)_(branch2[abc]|branch1)_bn_(s|b|rm|riv)", key):
        branch = _CAFFE2_BRANCHES[found[3]]
        return f"res{found[1]}.{found[2]}.{branch}.norm.{_CAFFE2_BN[found[4]]}"
    return key


def caffe2_affine_statistics(state: dict[str, np.ndarray], epsilon: float
                             ) -> dict[str, np.ndarray]:
    """Mean 0 and var 1 - eps for every affine-only BN (scale and bias but no statistics).

    `state` has detectron2 names. Our frozen BN computes (x - mean) / sqrt(var + eps) * scale
    + bias, which is then exactly scale * x + bias, Caffe2's AffineChannel.
    """
    added = {}
    for key, value in state.items():
        if key.endswith(".norm.weight"):
            base = key[: -len("weight")]
            if f"{base}running_mean" not in state:
                added[f"{base}running_mean"] = np.zeros_like(value, np.float32)
            if f"{base}running_var" not in state:
                added[f"{base}running_var"] = np.full_like(value, 1.0 - epsilon, np.float32)
    return added
