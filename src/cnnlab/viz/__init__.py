"""Seeing inside a CNN: filters, feature maps, effective receptive fields, maximal filter response, the CAM
family (pytorch-grad-cam: Grad-CAM, HiResCAM, Grad-CAM++, XGradCAM, LayerCAM, ScoreCAM, EigenCAM,
AblationCAM), guided Grad-CAM, occlusion, saliency and integrated gradients (captum), their faithfulness
(deletion and insertion, ROAD) and randomisation check (:mod:`cnnlab.viz.evaluate`), and the HTML page of a
run (:mod:`cnnlab.viz.report`). The field's libraries do the methods; cnnlab writes none by hand."""

from cnnlab.viz._state import VizError, untouched
from cnnlab.viz.attribution import (GRAD_CAM_VARIANTS, default_patch_sizes, grad_cam, integrated_gradients,
                                    normalize_maps, occlusion, saliency, targets_for)
from cnnlab.viz.cam import CAM_METHODS, CamMaps, cam
from cnnlab.viz.evaluate import ATTRIBUTION_METHODS, evaluate_attributions
from cnnlab.viz.inside import effective_receptive_field, feature_maps, filters, has_filters, layer_outputs
from cnnlab.viz.layers import activation_after, conv_layer, conv_layers, layer
from cnnlab.viz.maximize import Maximized, maximize_activation

__all__ = ["ATTRIBUTION_METHODS", "CAM_METHODS", "CamMaps", "GRAD_CAM_VARIANTS", "Maximized", "VizError",
           "activation_after", "cam", "conv_layer", "conv_layers", "default_patch_sizes", "effective_receptive_field",
           "evaluate_attributions", "feature_maps", "filters", "grad_cam", "has_filters", "layer_outputs",
           "integrated_gradients", "layer", "maximize_activation", "normalize_maps", "occlusion", "saliency",
           "targets_for", "untouched"]
