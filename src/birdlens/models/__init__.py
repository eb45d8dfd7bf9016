"""Model registry: build any study model by name with resolved weights, and know how to feed and explain it.

``create_model(name, num_classes, pretrained, weights)`` builds; ``get_model_info(name | model)`` gives its
data config, CAM layer and head; ``eval_transform(data_config)`` prepares images for it.
"""

from birdlens.models.data_config import (
    DataConfig,
    denormalize,
    eval_geometry,
    eval_transform,
    normalize_only,
    resize_size,
)
from birdlens.models.parts import (
    Stage,
    backbone_and_head,
    features,
    freeze_backbone,
    head_name,
    param_groups,
    set_train_mode,
    set_trainable,
    stages,
    unfreeze_last_stages,
)
from birdlens.models.registry import (
    ModelEntry,
    ModelInfo,
    count_params,
    create_model,
    get_model_info,
    list_models,
    register_model,
    resolve_entry,
)
from birdlens.models.simple_cnn import SimpleCNN
from birdlens.models.weights import WeightsError, hub_offline_reason, read_state_dict

__all__ = [
    "DataConfig",
    "ModelEntry",
    "ModelInfo",
    "SimpleCNN",
    "Stage",
    "WeightsError",
    "backbone_and_head",
    "count_params",
    "create_model",
    "denormalize",
    "eval_geometry",
    "eval_transform",
    "features",
    "freeze_backbone",
    "get_model_info",
    "head_name",
    "hub_offline_reason",
    "list_models",
    "normalize_only",
    "param_groups",
    "read_state_dict",
    "register_model",
    "resize_size",
    "resolve_entry",
    "set_train_mode",
    "set_trainable",
    "stages",
    "unfreeze_last_stages",
]
