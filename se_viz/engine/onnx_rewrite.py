"""The one edit se_viz makes to the ONNX graph paddle2onnx emits: names for its input's
dynamic dimensions, so that a session can fix the image size.

The traced program takes images of any size (``InputSpec([None, 3, None, None])``), and
paddle2onnx names those dimensions ``DynamicDimension.k``. With the height and width
unknown, ONNX Runtime cannot prove that a residual Add's two inputs have one shape, so
after its NCHWc layout pass it keeps such Adds (and the Reshapes around them, and the
activations after them) as separate nodes instead of fusing them into the convolution:
MobileNetV3-Large keeps 5 Adds and 16 Reshapes, RegNetY-800MF 14 Adds, 14 ReLUs and 43
Reshapes (2-7 % of a batch-1 forward; benchmarks/floor.py). Named ``batch``, ``height``
and ``width``, the size can be fixed per session
(``SessionOptions.add_free_dimension_override_by_name``) and those nodes go, with the
numbers unchanged but for float reordering (1e-5).

`REWRITES` names what is applied; it is part of the fast graph's cache key.
"""

from __future__ import annotations

REWRITES = ("input-dims-named",)
INPUT_DIMS = ("batch", None, "height", "width")  # None: the 3 colour channels, fixed


def rewrite(data: bytes) -> bytes:
    """``data`` (a serialised ONNX model) with every rewrite of `REWRITES` applied."""
    import onnx

    model = onnx.load_from_string(data)
    name_input_dims(model.graph)
    return model.SerializeToString()


def name_input_dims(graph) -> None:
    """Name the first input's dynamic dimensions `INPUT_DIMS` (in place); a dimension
    with a fixed size keeps it."""
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(INPUT_DIMS):
        raise ValueError(f"expected an (N, 3, H, W) image input, got {len(dims)} dimensions")
    for dim, name in zip(dims, INPUT_DIMS):
        if name is not None and not dim.HasField("dim_value"):
            dim.dim_param = name
