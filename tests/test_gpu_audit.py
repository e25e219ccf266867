"""GPU graph audit without a GPU: every op a GPU machine would run has a GPU kernel for its dtypes.

No GPU can be used here, but the TensorFlow wheel is built with CUDA and registers its GPU kernels
on any host (`kernels.get_registered_kernels_for_op`). So each graph the package runs on a GPU is
built as a GPU machine builds it and every op in it is looked up in that registry, for
float32, mixed_bfloat16 and mixed_float16:

- the train step with the GPU arms (`hardware.force(inline=True, grappler=True,
  conv_gradients="stock")`: nested network functions inlined, TensorFlow's conv gradients), for
  each gan_mode (lsgan, vanilla, wgangp: its penalty differentiates twice), gradients included;
  then (lsgan, wgangp) the same graph as Grappler's default passes rewrite it for a GPU before it
  runs there (a
  virtual cluster with one compute capability 8.0 GPU, nodes placed where their kernels are:
  functions inlined, control flow lowered to Switch/Merge/Enter/Exit, NHWC -> NCHW layout
  rewrites of float32 convolutions, and whatever else those passes do for a GPU);
- the inference function (`CycleGAN._translate`: grids, scores, evaluation), traced and
  Grappler-rewritten the same way;
- the SavedModel export (`exporting.export_run`, format saved_model): every node and function of its
  saved_model.pb, which is what TF Serving loads (both signatures, the loader's restore function,
  the save function), and both signatures after Grappler.

Walk: every node of the graph and of every function its nodes call, recursively (function-valued
attrs: PartitionedCall/StatefulPartitionedCall bodies, While/If branches and conditions, the
forward and backward functions of gradients); each called function must be in the graph's library
(nothing escapes the walk) and library functions no node calls are walked too. Each node is
reduced to its op and the dtypes of its type attrs (`T`, `dtype`, `SrcT`/`DstT`, `Tidx`, list(type)
attrs such as `Tin`/`Tout`; an unset attr at its OpDef default) and matched against the GPU
kernels' type constraints (device_type GPU, or DEFAULT, which every device uses). The match is
cross-checked with TensorFlow's own kernel lookup for the node placed on /device:GPU:0; the two
must agree. No op is exempt from the check: function calls, control flow, NoOp, Placeholder and
Identity-like ops are registered for DEFAULT or GPU and are checked like the rest.

Host ops: only the SavedModel graphs may hold ops without a GPU kernel, and only those in
`HOST_OPS` (string and file work that TensorFlow always runs on the host of a GPU machine); the
`translate_images` signature, the train step and the inference function must hold none.

Out of scope: the TFLite and ONNX files (they run in LiteRT and onnxruntime, never on
TensorFlow's GPU kernels), and what only a GPU can show (numbers, speed, memory: README "GPUs";
`bench/gpu_check.py` checks them on a machine with a GPU).
"""

from __future__ import annotations

import collections
import dataclasses
import os

import fixtures
import pytest
import tensorflow as tf
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.protobuf import (
    config_pb2,
    device_properties_pb2,
    meta_graph_pb2,
    saved_model_pb2,
)
from tensorflow.python.framework import kernels, op_def_registry
from tensorflow.python.grappler import cluster as grappler_cluster
from tensorflow.python.grappler import tf_optimizer
from tensorflow.python.util import _pywrap_kernel_registry

from cyclegan_tf import config, errors, exporting, hardware, sources, trainer

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
GAN_MODES = ("lsgan", "vanilla", "wgangp")
GPU = "/job:localhost/replica:0/task:0/device:GPU:0"
CPU = "/job:localhost/replica:0/task:0/device:CPU:0"

_SAVE = (
    "saving and restoring variables (the SavedModel's save/restore functions and its loader): "
    "file I/O on the host; restore runs once when a server loads the model, save only if a "
    "program saves it again; never per request"
)
_CODEC = (
    "serving_default's image codecs around the generator: TensorFlow has no GPU image codecs, "
    "so they run on the host per request and only the decoded uint8 tensor goes to the GPU "
    "(translate_images takes tensors and has none)"
)
_STRING = (
    "a string tensor: strings live in host memory on every device, so TensorFlow places this "
    "op (GPU kernels for its numeric dtypes only) on the host; "
)
# Ops that run on the host of a GPU machine, where that is harmless: "Op" (any dtypes) or
# "Op[attr=dtype]" -> why. Allowed in the SavedModel graphs only; every entry must occur there.
HOST_OPS = {
    "SaveV2": _SAVE,
    "RestoreV2": _SAVE,
    "MergeV2Checkpoints": _SAVE,
    "ShardedFilename": _SAVE,
    "StaticRegexFullMatch": _SAVE + " (the check of the checkpoint prefix)",
    "StringJoin": _SAVE + "; also " + _CODEC + " (the decoder's error message)",
    "Pack[T=string]": _STRING + _SAVE,
    "Select[T=string]": _STRING + _SAVE,
    "Const[dtype=string]": _STRING + "file names, signature keys and error messages",
    "VarHandleOp[dtype=string]": _STRING + "the paths of the export's two assets (config.json, "
    "export.json), set once by the loader",
    "DecodeImage": _CODEC,
    "EncodePng": _CODEC,
    "DecodeRaw": _CODEC + " (the file header, to tell the format)",
    "Substr": _STRING + _CODEC + " (the file header)",
    "AsString": _STRING + _CODEC + " (the image index in the error message)",
    "Equal[T=string]": _STRING + _CODEC + " (the file's magic bytes)",
    # tf.map_fn over the request's encoded images (sizes may differ within a request).
    "TensorListFromTensor[element_dtype=string]": _STRING + _CODEC,
    "TensorListGetItem[element_dtype=string]": _STRING + _CODEC,
    "TensorListSetItem[element_dtype=string]": _STRING + _CODEC,
    "TensorListStack[element_dtype=string]": _STRING + _CODEC,
}

Key = tuple  # (op, ((attr, (dtype name, ...)), ...))


# -- the kernel registry -------------------------------------------------------------------------


_gpu_kernels_cache: dict[str, list] = {}
_lookup_cache: dict[Key, tuple[bool, bool]] = {}


def _gpu_kernels(op: str) -> list:
    """The KernelDefs a GPU device can use for `op` (device_type GPU, or DEFAULT: any device)."""
    if op not in _gpu_kernels_cache:
        _gpu_kernels_cache[op] = [
            k
            for k in kernels.get_registered_kernels_for_op(op).kernel
            if k.device_type in ("GPU", "DEFAULT")
        ]
    return _gpu_kernels_cache[op]


def _type_attrs(node: node_def_pb2.NodeDef) -> dict[str, tuple[bool, tuple[int, ...]]]:
    """attr -> (whether a list(type), its DataType enums) for each type or list(type) attr of the
    node's OpDef (unset: the OpDef's default, as TensorFlow fills it in before a kernel lookup)."""
    op_def = op_def_registry.get(node.op)
    assert op_def is not None, f"{node.op} (node {node.name}) is not a registered op"
    types = {}
    for attr in op_def.attr:
        if attr.type not in ("type", "list(type)"):
            continue
        value = node.attr[attr.name] if attr.name in node.attr else attr.default_value
        assert not value.placeholder, f"{node.op} {node.name}: {attr.name} is polymorphic"
        is_list = attr.type == "list(type)"
        types[attr.name] = (is_list, tuple(value.list.type) if is_list else (value.type,))
    return types


def _key(node: node_def_pb2.NodeDef) -> Key:
    return node.op, tuple(
        (attr, tuple(tf.dtypes.as_dtype(t).name for t in enums))
        for attr, (_, enums) in sorted(_type_attrs(node).items())
    )


def _show(key: Key) -> str:
    """e.g. 'Cast[DstT=bfloat16, SrcT=float32]', 'RestoreV2[dtypes=float32*72|string]'."""
    op, attrs = key
    shown = []
    for attr, names in attrs:
        counts = collections.Counter(names)
        distinct = (n if counts[n] == 1 else f"{n}*{counts[n]}" for n in dict.fromkeys(names))
        if names:
            shown.append(f"{attr}={'|'.join(distinct)}")
    return f"{op}[{', '.join(shown)}]" if shown else op


def _registered(op: str) -> str:
    """The GPU kernels' type constraints, for a failure message."""
    found = sorted(
        {
            ", ".join(
                f"{c.name} in {[tf.dtypes.as_dtype(t).name for t in c.allowed_values.list.type]}"
                for c in k.constraint
            )
            or "any dtype"
            for k in _gpu_kernels(op)
        }
    )
    return "; ".join(found) if found else "no GPU kernel at all"


def _has_gpu_kernel(node: node_def_pb2.NodeDef, key: Key) -> bool:
    """Whether a GPU kernel's type constraints admit the node's dtypes.

    Cross-checked with TensorFlow's own lookup (FindKernelDef, as the runtime does it when it
    places the node on /device:GPU:0): the two must agree. Cached per op+dtypes.
    """
    if key not in _lookup_cache:
        types = _type_attrs(node)
        label = node.attr["_kernel"].s.decode() if "_kernel" in node.attr else ""
        ours = any(
            k.label == label
            and all(
                c.name in types and set(types[c.name][1]) <= set(c.allowed_values.list.type)
                for c in k.constraint
            )
            for k in _gpu_kernels(node.op)
        )
        probe = node_def_pb2.NodeDef(name="probe", op=node.op, device="/device:GPU:0")
        for attr, value in node.attr.items():
            if not attr.startswith("_") or attr == "_kernel":
                probe.attr[attr].CopyFrom(value)
        for attr, (is_list, enums) in types.items():  # the OpDef defaults, filled in
            if attr not in probe.attr:
                if is_list:
                    probe.attr[attr].list.type.extend(enums)
                else:
                    probe.attr[attr].type = enums[0]
        theirs = bool(_pywrap_kernel_registry.TryFindKernelClass(probe.SerializeToString()))
        _lookup_cache[key] = (ours, theirs)
    ours, theirs = _lookup_cache[key]
    assert ours == theirs, (
        f"{_show(key)}: the constraint match says {ours}, TensorFlow's kernel lookup {theirs}"
    )
    return ours


# -- walking a graph -----------------------------------------------------------------------------


def _called(node: node_def_pb2.NodeDef) -> list[str]:
    """Names of the functions a node calls (func, list(func) attrs: f, then_branch, body, ...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


@dataclasses.dataclass
class Audit:
    """What one graph holds. `ops`: (op, dtypes) -> where it occurs ('graph' or a function name);
    `missing`: the same for those without a GPU kernel."""

    name: str
    nodes: int = 0
    functions: int = 0
    ops: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(set))
    missing: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(set))
    reach: dict = dataclasses.field(default_factory=dict)  # function -> functions it calls
    paths: dict = dataclasses.field(default_factory=dict)  # function -> 'graph > f > g'

    def summary(self) -> str:
        return (
            f"{self.name}: {self.nodes} nodes in the graph and {self.functions} functions, "
            f"{len(self.ops)} distinct op+dtypes, {len(self.missing)} without a GPU kernel"
        )


def audit(graph_def, name: str) -> Audit:
    """Checks every node of `graph_def` and of every function in its library (see the module
    docstring). Fails if a node calls a function the library does not hold."""
    library = {f.signature.name: f for f in graph_def.library.function}
    result = Audit(name)

    def visit(nodes, where):
        calls = []
        for node in nodes:
            key = _key(node)
            result.nodes += 1
            result.ops[key].add(where)
            if not _has_gpu_kernel(node, key):
                result.missing[key].add(where)
            calls.extend(_called(node))
        result.reach[where] = calls
        return calls

    callers = {"graph": None}  # function -> the first node's function calling it
    pending = collections.deque(("graph", f) for f in visit(graph_def.node, "graph"))
    while pending:  # the functions the graph calls, recursively (breadth first: short paths)
        caller, function = pending.popleft()
        if function in callers:
            continue
        callers[function] = caller
        assert function in library, f"{name}: {function} is called but not in the library"
        pending.extend((function, f) for f in visit(library[function].node_def, function))
    for function in sorted(set(library) - set(callers)):  # in the library, called by no node
        callers[function] = None
        visit(library[function].node_def, function)
    result.functions = len(callers) - 1
    result.paths = {}
    for function in callers:
        chain = [function]
        while callers[chain[0]] is not None:
            chain.insert(0, callers[chain[0]])
        result.paths[function] = (
            " > ".join(chain) if chain[0] == "graph" else (f"{function} (called by no node)")
        )
    return result


def reachable(result: Audit, roots: list[str]) -> set[str]:
    """The functions `roots` call, themselves included, recursively."""
    found, pending = set(), list(roots)
    while pending:
        function = pending.pop()
        if function not in found:
            found.add(function)
            pending.extend(result.reach.get(function, []))
    return found


def _allowed(key: Key) -> str | None:
    """The HOST_OPS entry that covers `key`, or None."""
    op, attrs = key
    for entry in HOST_OPS:
        entry_op, _, condition = entry.partition("[")
        if entry_op != op:
            continue
        if not condition:
            return entry
        attr, _, dtype = condition.rstrip("]").partition("=")
        if set(dict(attrs).get(attr, ())) == {dtype}:
            return entry
    return None


def assert_all_gpu(result: Audit, host_ops_allowed: bool = False) -> set[str]:
    """Fails naming every op+dtype without a GPU kernel and where it is; returns the HOST_OPS
    entries used."""
    print(result.summary())
    used, unexpected = set(), []
    for key, where in sorted(result.missing.items()):
        entry = _allowed(key) if host_ops_allowed else None
        if entry:
            used.add(entry)
        else:
            unexpected.append(
                f"  {_show(key)} in {'; '.join(sorted(result.paths[w] for w in where)[:3])}"
                + (f" (+{len(where) - 3} more)" if len(where) > 3 else "")
                + f"; GPU kernels: {_registered(key[0])}"
            )
    assert not unexpected, (
        f"{result.name}: {len(unexpected)} op+dtypes without a GPU kernel:\n"
        + "\n".join(unexpected)
    )
    return used


# -- Grappler as on a GPU ------------------------------------------------------------------------


def _device(name: str, kind: str, **properties) -> device_properties_pb2.NamedDevice:
    return device_properties_pb2.NamedDevice(
        name=name, properties=device_properties_pb2.DeviceProperties(type=kind, **properties)
    )


def grappler_for_gpu(graph_def, fetches: list[str]):
    """`graph_def` as Grappler's default passes leave it on a machine with one GPU.

    A virtual cluster of a CPU and an NVIDIA GPU of compute capability 8.0 (Ampere: `auto`
    trains in bfloat16 there); every node placed where the runtime's placer would put it (the
    GPU when it has a kernel there, else the CPU). What the runtime does before it runs a
    function on a GPU, minus partitioning: inline calls, lower control flow, rewrite layouts
    (NHWC -> NCHW for float32 convolutions), fuse.
    """
    graph_def = type(graph_def).FromString(graph_def.SerializeToString())

    def place(nodes):
        for node in nodes:
            node.device = GPU if _has_gpu_kernel(node, _key(node)) else CPU

    place(graph_def.node)
    for function in graph_def.library.function:
        place(function.node_def)
    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.CopyFrom(graph_def)
    meta.collection_def["train_op"].node_list.value.extend(fetches)
    gpu = _device(
        GPU,
        "GPU",
        vendor="NVIDIA",
        model="virtual",
        frequency=1400,
        num_cores=108,
        environment={"architecture": "8.0", "cuda": "12030", "cudnn": "90000"},
        num_registers=65536,
        l1_cache_size=196608,
        l2_cache_size=41943040,
        shared_memory_size_per_multiprocessor=167936,
        memory_size=40 << 30,
        bandwidth=1555000000,
    )
    cluster = grappler_cluster.Cluster(devices=[_device(CPU, "CPU", num_cores=2), gpu])
    return tf_optimizer.OptimizeGraph(
        config_pb2.ConfigProto(), meta, verbose=False, cluster=cluster
    )


def _fetches(function) -> list[str]:
    """Node names a ConcreteFunction's graph computes: its outputs and control outputs."""
    graph = function.graph
    return [t.op.name for t in graph.outputs] + [op.name for op in graph.control_outputs]


# -- the audit itself ---------------------------------------------------------------------------


def test_the_audit_finds_a_dtype_without_a_gpu_kernel_deep_in_the_call_tree():
    # Lgamma has GPU kernels for float16 and float32, not bfloat16; its gradient is Digamma (the
    # same). Hidden in an If branch of a nested function and in that function's gradient.
    @tf.function(autograph=False)
    def nested(x):
        return tf.cond(tf.reduce_sum(x) > 0, lambda: tf.math.lgamma(x), lambda: x)

    @tf.function(autograph=False)
    def outer(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = nested(x)
        return tape.gradient(y, x)

    def missing(dtype):
        graph = outer.get_concrete_function(tf.TensorSpec([2], dtype)).graph.as_graph_def()
        result = audit(graph, f"probe ({dtype.name})")
        return result, {_show(key): where for key, where in result.missing.items()}

    result, found = missing(tf.bfloat16)
    assert set(found) == {"Lgamma[T=bfloat16]", "Digamma[T=bfloat16]"}
    assert all(where and "graph" not in where for where in found.values())  # in functions
    with pytest.raises(AssertionError, match=r"Lgamma\[T=bfloat16\] in .*GPU kernels: T in"):
        assert_all_gpu(result)
    assert not missing(tf.float16)[1]


# -- the graphs ----------------------------------------------------------------------------------


def _config(precision: str, gan_mode: str = "lsgan") -> config.Config:
    try:
        return config.preset("tiny", precision=precision, gan_mode=gan_mode)
    except errors.ConfigError as e:
        pytest.skip(f"config refuses it: {e}")


@pytest.mark.slow(seconds=6)
@pytest.mark.parametrize("gan_mode", GAN_MODES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_train_step_has_gpu_kernels(precision, gan_mode):
    # gan_mode=wgangp with precision=mixed_float16 is refused by config (the penalty's inner
    # gradient is not loss-scaled and underflows in float16): skipped with config's message.
    cfg = _config(precision, gan_mode)
    with hardware.force(inline=True, grappler=True, conv_gradients="stock"):
        model = trainer.CycleGAN(cfg, steps_per_epoch=4)
        images = tf.TensorSpec([1, cfg.data.crop_size, cfg.data.crop_size, 3], tf.float32)
        step = model.train_step.get_concrete_function(images, images)
    graph_def = step.graph.as_graph_def()
    traced = audit(graph_def, f"train step ({precision}, {gan_mode})")
    # The nested network functions are inlined on a GPU: no call may carry _noinline.
    noinline = [f.signature.name for f in graph_def.library.function if "_noinline" in f.attr]
    assert not noinline, f"functions kept as calls with the GPU arms: {noinline}"
    assert traced.functions > 0  # the networks' and gradients' functions were walked
    assert_all_gpu(traced)
    if gan_mode == "vanilla":
        # vanilla differs from lsgan by float32 loss ops (Exp, Log1p, Select, GreaterEqual,
        # Reciprocal) that Grappler's GPU passes leave alone: its rewritten graph held no
        # op+dtype that its traced graph and lsgan's rewritten one lack. Saves ~3 s a precision.
        return
    optimized = audit(
        grappler_for_gpu(graph_def, _fetches(step)), f"{traced.name} after Grappler for a GPU"
    )
    assert_all_gpu(optimized)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_inference_function_has_gpu_kernels(precision):
    with hardware.force(inline=True, grappler=True, conv_gradients="stock"):
        model = trainer.CycleGAN(_config(precision), steps_per_epoch=4)
        # Both directions trace the same function of their own generator: a2b stands for both.
        translate = model._translate["a2b"].get_concrete_function()
    graph_def = translate.graph.as_graph_def()
    assert_all_gpu(audit(graph_def, f"inference ({precision})"))
    assert_all_gpu(
        audit(
            grappler_for_gpu(graph_def, _fetches(translate)),
            f"inference ({precision}) after Grappler for a GPU",
        )
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny float32 run with a checkpoint (exports take any precision from it)."""
    path = tmp_path_factory.mktemp("gpu_audit") / "run"
    fixtures.make_run(str(path), precision="float32")
    return str(path)


@pytest.mark.slow(seconds=4)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_saved_model_export_has_gpu_kernels(precision, run_dir, tmp_path):
    written = exporting.export_run(
        run_dir,
        str(tmp_path / "export"),
        precision=precision,
        formats="saved_model",
        directions=("a2b",),  # b2a is the same graph around the other generator
    )
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(written["saved_model"]["a2b"], "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    (meta,) = saved_model.meta_graphs
    graph_def = meta.graph_def
    result = audit(graph_def, f"SavedModel ({precision})")
    used = assert_all_gpu(result, host_ops_allowed=True)

    # translate_images (tensors in and out) runs entirely on the GPU: no host op in any function
    # it calls.
    signatures = {name: meta.signature_def[name] for name in sources.SIGNATURES}
    nodes = {node.name: node for node in graph_def.node}

    def calls(signature):
        names = [t.name.split(":")[0] for t in signature.outputs.values()]
        return [f for name in names for f in _called(nodes[name])]

    tensor_path = reachable(result, calls(signatures[sources.TENSOR_SIGNATURE]))
    assert tensor_path, "translate_images calls no function"
    on_host = sorted(_show(key) for key, where in result.missing.items() if where & tensor_path)
    assert not on_host, f"{sources.TENSOR_SIGNATURE} runs ops on the host: {on_host}"

    fetches = [t.name.split(":")[0] for s in signatures.values() for t in s.outputs.values()]
    optimized = audit(
        grappler_for_gpu(graph_def, fetches), f"{result.name} signatures after Grappler for a GPU"
    )
    used |= assert_all_gpu(optimized, host_ops_allowed=True)
    # The allowlist stays minimal: every entry is needed by this export.
    stale = set(HOST_OPS) - used
    assert not stale, f"HOST_OPS entries the export does not need: {sorted(stale)}"
