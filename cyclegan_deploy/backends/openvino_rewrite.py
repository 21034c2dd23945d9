"""An exact rewrite OpenVINO's CPU plugin needs for the generators' narrow output convolution.

The last convolution of every generator here has 3 output channels at full resolution (CycleGAN/pix2pix's
7x7 ngf->3, SRResNet's 9x9 64->3, RRDBNet's 3x3 64->3). OpenVINO's CPU kernels vectorise over output channels,
so 3 channels fill a 16-lane AVX-512 register 3/16 full: on a distilled ngf-16 student at 1280x720 that one
float convolution took 55 of 177 ms (int8 graph, perf counters; the int8 ones around it run near peak).

Space-to-depth turns it into the same sum with 4x the channels: pad to even (rows and columns), move each 2x2
block into channels (SpaceToDepth: C -> 4C at half resolution), convolve with the rearranged kernel
((k+1)/2 square, 4*Cout outputs; see `s2d_kernel`), move the channels back (DepthToSpace) and crop.
Every output is the same dot product over the same weights and inputs (plus zeros), so only float summation
order changes (~1e-6). 7x7 16->3 becomes 4x4 64->12: 1.31x the multiply-adds at 4x the vector fill.

Applied in the OpenVINO backend to f32 convolutions (constant weights, stride 1, dilation 1, odd square
kernel >= 3, explicit pads) with at most MAX_OUT output channels; quantized ones (FakeQuantize weights), f16
graphs and SAME_* auto-padded convolutions are left alone. If it fails on a graph it did not foresee, the
backend runs the graph as read and warns (OpenVinoBackend.rewrite_note).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_OUT = 4  # output channels up to which the rewrite pays: 4*4 = 16 fills one AVX-512 register of f32
BLOCK = 2


def s2d_kernel(w: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """The kernel of the space-to-depth form of a stride-1 convolution with weights `w` (Cout, Cin, k, k).

    Input channels follow ONNX/OpenVINO SpaceToDepth (blocks_first: (by*block+bx)*Cin + ci), output channels
    DepthToSpace blocks_first ((dy*block+dx)*Cout + c). Output (dy, dx) of block (i, j) reads padded input
    row block*i + dy + ky = block*(i+ay) + by, so tap (ay, by) holds w[..., block*ay + by - dy, ...]."""
    co, ci, k, k2 = w.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"s2d_kernel needs an odd square kernel, got {k}x{k2}")
    ka = (k + 2 * block - 2) // block  # taps per block row covering dy + ky in [0, k + block - 2]
    out = np.zeros((block * block * co, block * block * ci, ka, ka), dtype=w.dtype)
    for dy in range(block):
        for dx in range(block):
            for by in range(block):
                for bx in range(block):
                    for ay in range(ka):
                        for ax in range(ka):
                            ky, kx = block * ay + by - dy, block * ax + bx - dx
                            if 0 <= ky < k and 0 <= kx < k:
                                out[(dy * block + dx) * co:(dy * block + dx + 1) * co,
                                    (by * block + bx) * ci:(by * block + bx + 1) * ci, ay, ax] = w[:, :, ky, kx]
    return out


RESHAPES = {"Reshape", "Unsqueeze", "Squeeze"}  # how the ONNX reader shapes a bias: Reshape(Constant, [1,C,1,1])


def _constant(value: Any) -> np.ndarray | None:
    """The data of a Constant, or of a reshape of one (not folded yet: the CPU plugin folds after reading)."""
    node = value.get_node()
    if node.get_type_name() in RESHAPES and value.get_partial_shape().is_static:
        data = _constant(node.input_value(0))
        return None if data is None else data.reshape(tuple(value.get_shape()))
    if node.get_type_name() == "Convert":  # f16-compressed IR weights; int8 ones (Convert of i8/u8) are not float
        data = _constant(node.input_value(0))
        return data.astype(np.float32) if data is not None and data.dtype.kind == "f" else None
    return np.asarray(node.get_data()) if node.get_type_name() == "Constant" else None


def _narrow(conv: Any) -> np.ndarray | None:
    """The weights of a convolution worth rewriting, else None."""
    if conv.get_type_name() != "Convolution" or conv.get_output_element_type(0).get_type_name() != "f32":
        return None  # an f16 graph (g_*.fp16.onnx) keeps its own convolutions
    if str(conv.get_attributes().get("auto_pad", "explicit")).lower() not in ("explicit", "notset", "valid"):
        return None  # SAME_UPPER/LOWER: pads decided per shape, not in pads_begin/pads_end
    w = _constant(conv.input_value(1))
    if w is None:  # int8 weights come through FakeQuantize or Subtract/Multiply: left alone
        return None
    attrs = conv.get_attributes()
    if list(attrs["strides"]) != [1, 1] or list(attrs["dilations"]) != [1, 1]:
        return None
    if w.ndim != 4 or w.shape[0] > MAX_OUT or w.shape[2] != w.shape[3] or w.shape[2] < 3 or w.shape[2] % 2 == 0:
        return None
    return np.asarray(w, dtype=np.float32)


ELEMENTWISE = {"Add", "Multiply", "Subtract", "Tanh", "Relu", "Sigmoid", "Clamp"}  # commute with DepthToSpace


def _per_channel(node: Any, channels: int) -> np.ndarray | None:
    """The constant second input of a binary op after the conv, tiled for the space-to-depth channels (a scalar
    as is); None if it is not a constant, per-channel or scalar."""
    if node.get_input_size() == 1:
        return np.zeros(0)  # unary: nothing to tile
    if node.get_input_size() != 2 or (c := _constant(node.input_value(1))) is None:
        return None
    if c.size == 1 and c.ndim <= 4:  # a scalar that broadcasts without adding dimensions
        return c
    if c.ndim == 4 and c.shape == (1, channels, 1, 1):
        return np.tile(c, (1, BLOCK * BLOCK, 1, 1))
    return None


def _users(out: Any) -> list[Any]:
    """The inputs that read `out`'s values (ShapeOf reads only its shape, which the rewrite keeps)."""
    return [t for t in out.get_target_inputs() if t.get_node().get_type_name() != "ShapeOf"]


def _epilogue(conv: Any, channels: int) -> list[tuple[Any, np.ndarray]]:
    """The chain of elementwise ops (bias Add, Tanh...) after `conv` that can run before DepthToSpace, so
    OpenVINO fuses them into the convolution as it did before the rewrite."""
    chain, out = [], conv.output(0)
    while len(targets := _users(out)) == 1:
        node = targets[0].get_node()
        if node.get_type_name() not in ELEMENTWISE or targets[0].get_index() != 0:
            break
        if (const := _per_channel(node, channels)) is None:
            break
        chain.append((node, const))
        out = node.output(0)
    return chain


def space_to_depth_narrow_convs(model: Any) -> list[str]:
    """Rewrites `model` (an ov.Model, dynamic or static shapes) in place; returns the rewritten convs' names."""
    import openvino.opset13 as ops

    def const(values: Any, dtype: Any = np.int64) -> Any:
        return ops.constant(np.asarray(values, dtype=dtype))

    done = []
    for conv in list(model.get_ordered_ops()):
        w = _narrow(conv)
        if w is None:
            continue
        k = w.shape[2]
        attrs = conv.get_attributes()
        x = conv.input_value(0)
        begin = np.array([0, 0, *attrs["pads_begin"]], dtype=np.int64)
        end = np.array([0, 0, *attrs["pads_end"]], dtype=np.int64)
        # padded size P (conv pads included), made even; the output is P - (k - 1), cropped back below
        hw = ops.gather(ops.shape_of(x, "i64"), const([2, 3]), const(0))
        padded = ops.add(hw, const(begin[2:] + end[2:]))
        pads_end = ops.concat([const(end[:2]), ops.add(ops.mod(padded, const([BLOCK, BLOCK])), const(end[2:]))], 0)
        xp = ops.pad(x, const(begin), pads_end, "constant", const(0, np.float32))
        y = ops.convolution(ops.space_to_depth(xp, "blocks_first", BLOCK), const(s2d_kernel(w), np.float32),
                            [1, 1], [0, 0], [0, 0], [1, 1]).output(0)
        chain = _epilogue(conv, w.shape[0])
        last = chain[-1][0].output(0) if chain else conv.output(0)
        shapes = [t for o in (conv.output(0), *(n.output(0) for n, _ in chain)) for t in o.get_target_inputs()
                  if t.get_node().get_type_name() == "ShapeOf"]  # would keep the old conv alive
        consumers, names = [*_users(last), *shapes], last.get_names()
        for node, tiled in chain:  # the same nodes, moved before DepthToSpace
            node.input(0).replace_source_output(y)
            if tiled.size > 1:
                node.input(1).replace_source_output(const(tiled, tiled.dtype).output(0))
            node.validate_and_infer_types()
            y = node.output(0)
        out = ops.slice(ops.depth_to_space(y, "blocks_first", BLOCK), const([0, 0]),
                        ops.subtract(padded, const(k - 1)), const([1, 1]), const([2, 3]))
        for target in consumers:
            target.replace_source_output(out.output(0))
        if chain:
            y.get_tensor().set_names(set())
        out.output(0).get_tensor().set_names(names)
        name = conv.get_friendly_name()
        out.set_friendly_name(f"{name}/space_to_depth")
        done.append(name)
    if done:
        model.validate_nodes_and_infer_types()
    return done
