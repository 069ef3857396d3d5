"""Networks: the VMamba encoder of OpenUS and its selective-scan ops, ViT encoders with masked-image-modelling
networks and a UNETR-style decoder, self-describing encoder files, and checkpoint loading."""

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
from .mim import MAEDecoder, MaskedAutoencoder, MaskedImageModel
from .layers import LayerNorm2d, Linear2d, Mlp2d
from .ops.attention import ScanParams, attention_map, attention_scores
from .ops.scan_cpu import linear_recurrence
from .ops.selective_scan import available_backends, selective_scan
from .precision import AutocastInferer, cast_weights_for_autocast
from .pretrained import (
    INITS,
    build_pretrained_encoder,
    encoder_config,
    encoder_config_from_checkpoint,
    infer_vmamba_config,
    read_encoder_checkpoint,
)
from .record import build_from_record, encoder_file, encoder_record, is_encoder_file, load_encoder_file
from .segnet import OpenUSSegNet
from .ss2d import SS2D
from .vit import VIT_PRESETS, ViTEncoder, ViTFeatures, build_vit, vit_base, vit_small, vit_tiny
from .vit_decoder import UNETRDecoder, ViTUNETR
from .vmamba import VMamba, VSSBlock, vmamba_base, vmamba_small, vmamba_tiny

__all__ = [
    "CLASSIFIER_MODES",
    "INITS",
    "build_pretrained_encoder",
    "cast_weights_for_autocast",
    "AutocastInferer",
    "encoder_config",
    "encoder_config_from_checkpoint",
    "infer_vmamba_config",
    "read_encoder_checkpoint",
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
    "VIT_PRESETS",
    "MAEDecoder",
    "MaskedAutoencoder",
    "MaskedImageModel",
    "UNETRDecoder",
    "ViTUNETR",
    "ViTEncoder",
    "ViTFeatures",
    "build_from_record",
    "build_vit",
    "encoder_file",
    "encoder_record",
    "is_encoder_file",
    "load_encoder_file",
    "vit_base",
    "vit_small",
    "vit_tiny",
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
