"""A reader for dlib's DNN files: parameters from the file, topology from dlib's examples."""

from .layers import (
    AddPrev,
    Affine,
    Conv,
    FullyConnected,
    Layer,
    MetricLoss,
    MmodOptions,
    Pool,
    Relu,
    RgbInput,
)
from .reader import DlibNetwork, Node, read_network
from .stream import DlibFormatError
from .topology import mmod_face_detector, resnet_face_recognition

__all__ = [
    "AddPrev",
    "Affine",
    "Conv",
    "DlibFormatError",
    "DlibNetwork",
    "FullyConnected",
    "Layer",
    "MetricLoss",
    "MmodOptions",
    "Node",
    "Pool",
    "Relu",
    "RgbInput",
    "mmod_face_detector",
    "read_network",
    "resnet_face_recognition",
]
