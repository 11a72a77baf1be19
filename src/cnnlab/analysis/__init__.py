"""Model anatomy: a traced graph of any network, its summary (shapes, parameters, MACs, memory) and
the receptive field of every layer."""

from cnnlab.analysis.fields import FieldError, FieldReport, field_report
from cnnlab.analysis.graph import Graph, Node, ShapeError, trace
from cnnlab.analysis.receptive_field import AxisField, Field, receptive_fields, unit_region
from cnnlab.analysis.summary import LayerRow, Summary, dense_equivalent, summarize

__all__ = ["AxisField", "Field", "FieldError", "FieldReport", "Graph", "LayerRow", "Node", "ShapeError", "Summary",
           "dense_equivalent", "field_report", "receptive_fields", "summarize", "trace", "unit_region"]
