"""Networks: the VMamba encoder of OpenUS, its selective-scan ops, and checkpoint loading."""

from .checkpoint import LoadReport, load_openus_checkpoint, read_state_dict
from .classifier import OpenUSClassifier
from .features import FeatureInferer, OpenUSFeatureExtractor
from .decoder import ChannelAttention, ChannelAttentionBlock, MambaDecoder, MambaDecoderBlock, PatchExpand
from .factory import (
    CLASSIFIER_MODES,
    PRESETS,
    build_encoder,
    encoder_layer_id,
    is_no_weight_decay,
    param_groups,
    resolve_freeze_encoder,
    set_trainable,
)
from .layers import LayerNorm2d, Linear2d, Mlp2d
from .ops.attention import ScanParams, attention_map, attention_scores
from .ops.scan_cpu import linear_recurrence
from .ops.selective_scan import available_backends, selective_scan
from .segnet import OpenUSSegNet
from .ss2d import SS2D
from .vmamba import VMamba, VSSBlock, vmamba_base, vmamba_small, vmamba_tiny

__all__ = [
    "CLASSIFIER_MODES",
    "OpenUSClassifier",
    "OpenUSFeatureExtractor",
    "FeatureInferer",
    "ChannelAttention",
    "ChannelAttentionBlock",
    "MambaDecoder",
    "MambaDecoderBlock",
    "OpenUSSegNet",
    "PatchExpand",
    "PRESETS",
    "build_encoder",
    "encoder_layer_id",
    "is_no_weight_decay",
    "param_groups",
    "set_trainable",
    "LayerNorm2d",
    "Linear2d",
    "LoadReport",
    "Mlp2d",
    "SS2D",
    "ScanParams",
    "VMamba",
    "VSSBlock",
    "attention_map",
    "attention_scores",
    "available_backends",
    "linear_recurrence",
    "load_openus_checkpoint",
    "read_state_dict",
    "resolve_freeze_encoder",
    "selective_scan",
    "vmamba_base",
    "vmamba_small",
    "vmamba_tiny",
]
