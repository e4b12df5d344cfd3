"""The scan of a SavedModel folder: keras_metadata.pb's layers and every graph and library function of
saved_model.pb (nested functions included), read from the proto without running any of it, against the ops
that reach outside the model (TensorFlow's own `saved_model_cli scan` denylist, grown from tf.raw_ops)."""
from __future__ import annotations

import contextlib
import os

import re
import sys
from collections import Counter
from pathlib import Path

from pipeline.errors import ModelError
from pipeline.keras_import.contents import Contents, Refusal, first_line, read_json
from pipeline.keras_import.scan_config import scan_layers

def _ops(*names: str) -> frozenset[str]:
    return frozenset(n for group in names for n in group.split())


# What a graph op would do outside the model, by op. The start is TensorFlow's own `saved_model_cli scan`
# denylist (tensorflow/python/tools/saved_model_cli.py, _OP_DENYLIST = {WriteFile, ReadFile, PrintV2});
# the rest is from reading tf.raw_ops (TF 2.21: 1,462 ops) for files, Python, printing, the network.
DENYLIST: dict[str, frozenset[str]] = {
    "calls back into Python": _ops("PyFunc PyFuncStateless EagerPyFunc GeneratorDataset"),
    "reads or writes files": _ops(
        "ReadFile WriteFile MatchingFiles ImmutableConst FileSystemSetConfiguration RecordInput "
        "InitializeTableFromTextFile InitializeTableFromTextFileV2 LoadAndRemapMatrix GenerateVocabRemapping "
        "DecodeProtoV2 EncodeProto "     # descriptor_source may name a file on disk
        "Save SaveSlices SaveV2 Restore RestoreSlice RestoreV2 MergeV2Checkpoints "
        "TFRecordReader TFRecordReaderV2 TextLineReader TextLineReaderV2 WholeFileReader WholeFileReaderV2 "
        "FixedLengthRecordReader FixedLengthRecordReaderV2 LMDBReader IdentityReader IdentityReaderV2 "
        "TFRecordDataset TFRecordDatasetV2 TextLineDataset FixedLengthRecordDataset FixedLengthRecordDatasetV2 "
        "LMDBDataset ExperimentalLMDBDataset MatchingFilesDataset ExperimentalMatchingFilesDataset "
        "CSVDataset CSVDatasetV2 ExperimentalCSVDataset SqlDataset ExperimentalSqlDataset "
        "SnapshotDataset SnapshotDatasetV2 SnapshotDatasetReader SnapshotNestedDatasetReader SnapshotChunkDataset "
        "ListSnapshotChunksDataset SaveDataset SaveDatasetV2 LoadDataset DistributedSave CacheDataset "
        "CacheDatasetV2 DatasetToTFRecord ExperimentalDatasetToTFRecord"),
    "prints to the console or a file": _ops("Print PrintV2"),
    "writes summaries or debug dumps to files or servers": _ops(
        "CreateSummaryFileWriter CreateSummaryDbWriter SummaryWriter WriteSummary WriteScalarSummary "
        "WriteHistogramSummary WriteImageSummary WriteAudioSummary WriteGraphSummary WriteRawProtoSummary "
        "FlushSummaryWriter CloseSummaryWriter ImportEvent StatsAggregatorSetSummaryWriter "
        "DebugIdentity DebugIdentityV2 DebugIdentityV3 DebugNanCount DebugNumericSummary DebugNumericSummaryV2"),
    "talks to other machines or processes": _ops(
        "Rpc TryRpc RpcClient RpcCall RpcServer RemoteCall Send Recv _Send _Recv _HostSend _HostRecv "
        "DataServiceDataset DataServiceDatasetV2 DataServiceDatasetV3 DataServiceDatasetV4 "
        "RegisterDataset RegisterDatasetV2"),
}
# Families matched by name, so a variant added to TensorFlow later is caught as well.
DENY_PATTERNS = {
    "reads or writes files": re.compile(r"^Reader|Reader(V2)?$"),
    "writes summaries or debug dumps to files or servers": re.compile(r"^(?!BoostedTrees).*Summary|^Debug"),
    "talks to other machines or processes": re.compile(r"^Collective|Rpc"),
}
# The saver's own functions (meta_graph.saver_def) read and write variables/ with these; TensorFlow runs
# them to restore the checkpoint from the path it feeds to saver_filename, never from a model's signature.
SAVER_OPS = {"save": _ops("SaveV2 MergeV2Checkpoints"), "restore": _ops("RestoreV2")}


def denied(op: str) -> str | None:
    """What `op` would do outside the model ('reads or writes files', ...), None for a model's own math."""
    for why, ops in DENYLIST.items():
        if op in ops:
            return why
    for why, pattern in DENY_PATTERNS.items():
        if pattern.search(op):
            return why
    return None


# --- SavedModel folders ------------------------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, bytes) of the length-delimited fields of a protobuf message; others skipped."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            yield number, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"wire type {wire}")


def _scan_keras_metadata(path: Path, contents: Contents) -> None:
    """keras_metadata.pb (tf_keras's SavedMetadata: nodes = 1; node_path = 3, metadata = 5, a JSON text),
    decoded by hand so that reading it needs no Keras."""
    raw = (path / "keras_metadata.pb").read_bytes()
    try:
        nodes = [dict(_fields(node)) for number, node in _fields(raw) if number == 1]
        for node in nodes:
            meta = node.get(5, b"").decode()
            if not meta:
                continue
            node_path = node.get(3, b"?").decode(errors="replace")
            info = read_json(path, meta, f"keras_metadata.pb node {node_path}")
            if isinstance(info, dict):       # every node is checked; the layers are counted from the root's
                counted = Counter(contents.layers)
                scan_layers(contents, info, top_is_layer=node.get(4) != b"_tf_keras_metric")
                contents.layers = counted
                if node_path == "root":      # its config (model_config repeats it)
                    root = Contents(path, contents.format)
                    scan_layers(root, {"class_name": info.get("class_name"), "config": info.get("config")})
                    contents.layers.update(root.layers)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: a damaged keras_metadata.pb ({first_line(e)})") from None


def _called(node) -> list[str]:
    """Names of the functions a NodeDef calls: its op when that is a library function, and its `func` attrs."""
    out = []
    for value in node.attr.values():
        if value.HasField("func"):
            out.append(value.func.name)
        if value.HasField("list"):
            out.extend(f.name for f in value.list.func)
    return out


def _reach(start: list[str], calls: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        f = todo.pop()
        if f in seen or f not in calls:
            continue
        seen.add(f)
        todo.extend(calls[f])
    return seen


def _scan_meta_graph(path: Path, mg, contents: Contents) -> None:
    from tensorflow.python.framework import op_def_registry
    graph = mg.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    calls = {name: [c for n in f.node_def for c in ([n.op] if n.op in functions else []) + _called(n)]
             for name, f in functions.items()}
    # The saver: nodes named by saver_def, fed by its filename placeholder; what they call may save/restore.
    saver_nodes: dict[str, str] = {}
    if mg.HasField("saver_def"):
        sd = mg.saver_def
        placeholder = sd.filename_tensor_name.split(":")[0]
        for kind, tensor in (("save", sd.save_tensor_name), ("restore", sd.restore_op_name)):
            saver_nodes[tensor.split(":")[0].lstrip("^")] = kind
        saver_nodes = {name: kind for name, kind in saver_nodes.items()
                       if any(n.name == name and n.input and n.input[0].split(":")[0] == placeholder
                              for n in graph.node)}
    roots = {"save": [], "restore": [], "model": []}
    for n in graph.node:
        targets = ([n.op] if n.op in functions else []) + _called(n)
        roots[saver_nodes.get(n.name, "model")].extend(targets)
    reached = {kind: _reach(r, calls) for kind, r in roots.items()}
    unreached = set(functions) - set().union(*reached.values())

    def allowed_here(op: str, function: str | None) -> bool:
        if function is None or function in reached["model"] or function in unreached:
            return False
        kinds = [k for k in ("save", "restore") if function in reached[k]]
        return len(kinds) == 1 and op in SAVER_OPS[kinds[0]]

    def check(op: str, where: str, function: str | None) -> None:
        contents.ops[op] += 1
        if op in functions:
            return
        if op_def_registry.get(op) is None:
            raise ModelError(f"{path}: op {op} ({where}) is not an op of this TensorFlow: the SavedModel is "
                             "damaged or needs a custom op library")
        why = denied(op)
        if why and not allowed_here(op, function):
            what = f"op {op} in {where}"
            if what not in contents.carried:
                contents.refused.append(Refusal(what, f"{why}: running the model would do that on this machine"))

    for n in graph.node:
        check(n.op, f"graph node '{n.name}'", None)
    for name, f in functions.items():
        for n in f.node_def:
            check(n.op, f"function {name}", name)


@contextlib.contextmanager
def _tensorflow_quiet():
    """TensorFlow's C++ start-up lines (oneDNN, CUDA stubs: printed before its logging honours
    TF_CPP_MIN_LOG_LEVEL) kept off stderr while the scan imports it, so a refusal stays one line."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def scan_savedmodel(path: Path, contents: Contents) -> None:
    from google.protobuf.message import DecodeError
    with _tensorflow_quiet():
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow.python.framework import op_def_registry  # noqa: F401  (loaded here, quietly)
    if (path / "keras_metadata.pb").is_file():
        _scan_keras_metadata(path, contents)
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise ModelError(f"{path}: a damaged saved_model.pb ({first_line(e)})") from None
    if not sm.meta_graphs:
        raise ModelError(f"{path}: saved_model.pb holds no graph: the SavedModel is damaged")
    for mg in sm.meta_graphs:
        _scan_meta_graph(path, mg, contents)
