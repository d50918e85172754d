"""cnnc: a compiler for convolutional neural networks.

    graph = cnnc.load("lib/resnet18.cnn", classes=10)
    print(graph.summary())
"""

from .errors import CnncError
from .frontend import load
from .graph import BATCH, Graph, Node, ParamSpec, TensorType

__all__ = ["load", "CnncError", "Graph", "Node", "ParamSpec", "TensorType", "BATCH"]
__version__ = "0.1.0"
