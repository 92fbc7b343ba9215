"""OpenVINO IR (v10/v11) files -> ONNX graphs, for the few layer types face networks use.

faceledger runs Intel's face-reidentification-retail-0095 on OpenVINO (vision/openvino_models.py);
this reader gives an independent second implementation of the same network on ONNX Runtime,
used as the reference the OpenVINO outputs are tested against (tests/test_reid_equivalence.py)
and measured against it in bench/embedders.py.
"""

from .graph import build_onnx
from .reader import IrFormatError, IrLayer, IrNetwork, read_ir

__all__ = ["IrFormatError", "IrLayer", "IrNetwork", "build_onnx", "read_ir"]
