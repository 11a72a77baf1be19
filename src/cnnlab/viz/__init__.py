"""Seeing inside a CNN: filters, feature maps, effective receptive fields, maximal filter response,
Grad-CAM(++), occlusion, saliency, integrated gradients, their faithfulness (deletion and insertion)
and the HTML page of a run (:mod:`cnnlab.viz.report`). Captum does what it does well; cnnlab writes by
hand only what captum lacks (Grad-CAM++)."""

from cnnlab.viz._state import VizError, untouched
from cnnlab.viz.attribution import (GRAD_CAM_VARIANTS, default_patch_sizes, grad_cam, integrated_gradients,
                                    normalize_maps, occlusion, saliency, targets_for)
from cnnlab.viz.inside import effective_receptive_field, feature_maps, filters, has_filters, layer_outputs
from cnnlab.viz.layers import activation_after, conv_layer, conv_layers, layer
from cnnlab.viz.maximize import Maximized, maximize_activation

__all__ = ["GRAD_CAM_VARIANTS", "Maximized", "VizError", "activation_after", "conv_layer", "conv_layers",
           "default_patch_sizes", "effective_receptive_field", "feature_maps", "filters", "grad_cam", "has_filters", "layer_outputs", "integrated_gradients", "layer", "maximize_activation", "normalize_maps", "occlusion",
           "saliency", "targets_for", "untouched"]
