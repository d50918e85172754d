"""cnnc: a compiler for convolutional neural networks.

    graph = cnnc.load("lib/resnet18.cnn", classes=10)
    print(graph.summary())
    net = cnnc.compile("lib/lenet.cnn")
    logits = net(images)["logits"]
"""

from .errors import CnncError
from .frontend import load
from .graph import BATCH, Graph, Node, ParamSpec, TensorType
from .runtime import optim
from .runtime.model import Model, Trainer, compile

__all__ = ["load", "compile", "Model", "Trainer", "optim", "CnncError", "Graph", "Node", "ParamSpec", "TensorType", "BATCH"]
__version__ = "0.1.0"
