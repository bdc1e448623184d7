"""Triton model-repository config.pbtxt for an ONNX model folder (onnx/<name>/config.pbtxt).

Triton's `dims` leave out the batch dimension when max_batch_size > 0: it adds
it itself, so [-1, 28, 28, 1] in the manifest is dims [28, 28, 1] here. A
tensor that is only a batch ([-1] in the manifest: log_prior's log_pz) is
written the way Triton's documentation asks for it, dims [1] with
`reshape: { shape: [ ] }`, so that the model still sees [batch].
"""

MAX_BATCH_SIZE = 1024
TRITON_DATATYPES = {"FP32": "TYPE_FP32"}


def config_text(name, tensors, max_batch_size=MAX_BATCH_SIZE):
    """The protobuf text of a ModelConfig for `name` with this model's {"inputs", "outputs"}."""
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        f"input [\n{_tensor_list(tensors['inputs'])}\n]",
        f"output [\n{_tensor_list(tensors['outputs'])}\n]",
    ]
    return "\n".join(lines) + "\n"


def write_config(path, name, tensors, max_batch_size=MAX_BATCH_SIZE):
    with open(path, "w") as f:
        f.write(config_text(name, tensors, max_batch_size))


def _tensor_list(tensors):
    entries = []
    for t in tensors:
        per_item = t["shape"][1:]  # without the batch dimension
        dims = ", ".join(str(d) for d in per_item or [1])
        fields = [f'name: "{t["name"]}"', f"data_type: {TRITON_DATATYPES[t['datatype']]}", f"dims: [ {dims} ]"]
        if not per_item:
            fields.append("reshape: { shape: [ ] }")
        entries.append("  {\n" + "".join(f"    {line}\n" for line in fields) + "  }")
    return ",\n".join(entries)
