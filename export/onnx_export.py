"""tf.function -> ONNX file with the contract's names, a dynamic `batch` dimension and metadata.

tf2onnx.convert.from_function traces the serving tf.function (from_keras does
not handle Keras 3 models). Its output already carries the signature's names
(x, z_mean, ...), but it calls the unknown batch dimension `unk__N` and lists
dict outputs in sorted order; both are fixed here.
"""

import json

import onnx
import tf2onnx

from .errors import ExportError

OPSET = 17
BATCH = "batch"


def convert(function, path, name, tensors, metadata):
    """Converts `function` (a tf.function with an input_signature) and writes `path`.

    Args:
        function: the module's serving tf.function.
        path: where model.onnx goes.
        name: the model name ("encoder", "decoder", "prior", "log_prior"); the graph name.
        tensors: this model's {"inputs", "outputs"} from kvae_contract.artifacts.model_tensors.
        metadata: dict of str -> JSON-able value, stored in metadata_props.
    """
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=OPSET)
    graph = proto.graph
    graph.name = name
    # Outputs in the manifest's order, so that session.run(None, ...) matches it.
    by_name = {o.name: o for o in graph.output}
    expected = [t["name"] for t in tensors["outputs"]]
    if sorted(by_name) != sorted(expected) or [i.name for i in graph.input] != [t["name"] for t in tensors["inputs"]]:
        raise ExportError(
            f"tf2onnx named the {name} tensors {[i.name for i in graph.input]} -> {sorted(by_name)}; "
            f"expected {[t['name'] for t in tensors['inputs']]} -> {expected}"
        )
    outputs = [onnx.ValueInfoProto.FromString(by_name[n].SerializeToString()) for n in expected]
    del graph.output[:]
    graph.output.extend(outputs)
    _name_batch_dimension(graph)
    onnx.helper.set_model_props(
        proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def _name_batch_dimension(graph):
    """Names dimension 0 of every graph input and output `batch` (tf2onnx writes `unk__N`).

    One shared name also tells runtimes that outputs have the inputs' batch size.
    """
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH
