"""Edge TPU (Coral) export: a full-integer model that meets the Edge TPU's requirements, a static op-by-op
compatibility report against Coral's documented operations, and ``edgetpu_compiler`` when it is installed."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from converters.registry import ExportInfo, ExportOptions, compiled_path
from converters.source import SourceModel

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    "edgetpu_compiler not found: install it on x86-64 Debian/Ubuntu from Coral's apt repository "
    "(sudo apt-get install edgetpu-compiler, see https://coral.ai/docs/edgetpu/compiler/), "
    "then run: edgetpu_compiler -s MODEL"
)
ON_CHIP_BYTES = 8 * 2**20  # the Edge TPU caches about 8 MB of parameters on chip; the rest streams from the host

# TFLite builtin -> the limitation Coral documents for it ("" when none). Source: coral.ai/docs/edgetpu/models-intro
EDGETPU_OPS = {
    "ADD": "",
    "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation; a constant input must be all zeros with exactly 2 inputs",
    "CONV_2D": "",
    "DEPTHWISE_CONV_2D": "dilated kernels are not supported",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weights format only; output tensor is one-dimensional",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional LSTM only",
    "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation function",
    "MEAN": "reduction along x and/or y only",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "no packing in the batch dimension",
    "PAD": "padding along x and/or y only",
    "PRELU": "alpha must be one-dimensional",
    "QUANTIZE": "",
    "REDUCE_MAX": "not on the batch dimension",
    "REDUCE_MIN": "not on the batch dimension",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "some reshapes of large tensors are not mapped",
    "RESIZE_BILINEAR": "3-D input/output; may stay on the CPU to avoid precision loss",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output; may stay on the CPU to avoid precision loss",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "1-D input of at most 16,000 elements",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "no splitting in the batch dimension",
    "SQUEEZE": "4-D input only",
    "STRIDED_SLICE": "all strides 1, no ellipsis or new-axis masks",
    "SUB": "",
    "SUM": "not on the batch dimension",
    "SQUARED_DIFFERENCE": "",
    "TANH": "",
    "TRANSPOSE": "not in the batch dimension",
    "TRANSPOSE_CONV": "",
}
_EIGHT_BIT = ("int8", "uint8")


@dataclass(frozen=True)
class OpCheck:
    index: int
    op: str
    on_edgetpu: bool
    reason: str = ""  # why not, or the documented limitation worth knowing


@dataclass(frozen=True)
class EdgeTpuReport:
    ops: tuple[OpCheck, ...]
    first_fallback: OpCheck | None  # the compiler splits once: this op and everything after it run on the CPU
    parameter_bytes: int
    on_chip_bytes: int  # estimated parameters cached on chip
    streamed_bytes: int  # estimated parameters streamed from host memory at every inference
    compiler: dict = field(default_factory=dict)  # parsed edgetpu_compiler output, when it ran

    @property
    def mapped(self) -> int:
        if self.first_fallback is None:
            return sum(op.on_edgetpu for op in self.ops)
        return sum(op.on_edgetpu for op in self.ops if op.index < self.first_fallback.index)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mapped_ops"] = self.mapped
        data["total_ops"] = len(self.ops)
        return data

    def summary(self) -> str:
        head = f"{self.mapped} of {len(self.ops)} ops map to the Edge TPU"
        if self.first_fallback is not None:
            f = self.first_fallback
            head += f"; from op {f.index} ({f.op}: {f.reason}) onwards everything runs on the CPU"
        mib = self.parameter_bytes / 2**20
        stream = (
            f", about {self.streamed_bytes / 2**20:.2f} MiB streamed from host memory per inference"
            if self.streamed_bytes
            else ", all cached on chip"
        )
        return f"{head}; parameters {mib:.2f} MiB{stream}"


def compatibility_report(path: str | Path) -> EdgeTpuReport:
    """Check a .tflite op by op against the Edge TPU's documented operations and constraints."""
    from devices.litert import constant_tensors, graph_interpreter

    interp = graph_interpreter(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    graph_outputs = {int(d["index"]) for d in interp.get_output_details()}
    constants = constant_tensors(interp)
    checks = []
    for op in ops:
        name = op["op_name"]
        inputs = [int(i) for i in op["inputs"] if i >= 0]
        outputs = [int(i) for i in op["outputs"]]
        reason = _op_problem(interp, name, inputs, outputs, tensors, constants, graph_outputs)
        checks.append(OpCheck(int(op["index"]), name, reason is None, reason or EDGETPU_OPS.get(name, "")))
    first = next((c for c in checks if not c.on_edgetpu), None)
    param_bytes = int(sum(_nbytes(tensors[i]) for i in constants))
    on_chip = min(param_bytes, ON_CHIP_BYTES)
    return EdgeTpuReport(
        ops=tuple(checks),
        first_fallback=first,
        parameter_bytes=param_bytes,
        on_chip_bytes=on_chip,
        streamed_bytes=param_bytes - on_chip,
    )


def _nbytes(tensor: dict) -> int:
    return int(np.prod(tensor["shape"])) * np.dtype(tensor["dtype"]).itemsize if len(tensor["shape"]) else 0


def _op_problem(interp, name, inputs, outputs, tensors, constants, graph_outputs) -> str | None:
    if name == "DEQUANTIZE" and all(o in graph_outputs for o in outputs):
        return "float output: dequantized on the CPU (use --io uint8 or int8 to keep it on the Edge TPU)"
    if name not in EDGETPU_OPS:
        return "operation not supported by the Edge TPU"
    for i in inputs + outputs:
        t = tensors[i]
        dtype = np.dtype(t["dtype"]).name
        signature = t.get("shape_signature")
        if signature is not None and any(int(d) < 0 for d in signature):
            return f"tensor {t['name']!r} has a dynamic shape"
        if i in constants:
            if dtype not in (*_EIGHT_BIT, "int32"):
                return f"constant {t['name']!r} is {dtype}, not 8-bit"
            continue
        if dtype not in _EIGHT_BIT:
            return f"tensor {t['name']!r} is {dtype}, not 8-bit quantized"
        shape = [int(d) for d in t["shape"]]
        if len(shape) > 3 and math.prod(shape[:-3]) != 1:
            return f"tensor {t['name']!r} {shape}: only the 3 innermost dimensions may be larger than 1"
    if name == "MEAN" and len(inputs) > 1 and inputs[1] in constants:
        rank = len(tensors[inputs[0]]["shape"])
        axes = {int(a) % rank for a in np.atleast_1d(interp.get_tensor(inputs[1]))}
        if rank == 4 and not axes <= {1, 2}:
            return f"reduces axes {sorted(axes)}; the Edge TPU reduces along x and/or y only"
    if name == "SOFTMAX":
        shape = [int(d) for d in tensors[inputs[0]]["shape"]]
        if math.prod(shape[:-1]) != 1 or shape[-1] > 16000:
            return f"input {shape}: must be one-dimensional with at most 16,000 elements"
    if name == "FULLY_CONNECTED":
        shape = [int(d) for d in tensors[outputs[0]]["shape"]]
        if math.prod(shape[:-1]) != 1:
            return f"output {shape} is not one-dimensional"
    if name == "PAD" and len(inputs) > 1 and inputs[1] in constants:
        pads = np.asarray(interp.get_tensor(inputs[1]))
        if pads.shape[0] == 4 and (pads[0].any() or pads[3].any()):
            return "pads the batch or channel dimension; only x and y are supported"
    return None


# -- the compiler ------------------------------------------------------------------------------------------------
def find_compiler() -> str | None:
    return shutil.which(COMPILER)


_SIZE = re.compile(r"([\d.]+)\s*(B|KiB|MiB|GiB)")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _bytes(text: str) -> int | None:
    m = _SIZE.search(text)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def parse_compiler_output(stdout: str, log: str = "") -> dict:
    """edgetpu_compiler's console output and operation log -> the fields of the compatibility report."""
    result: dict = {"compiled": "Compilation succeeded" in stdout or "Model compiled successfully" in stdout, "ops": []}
    version = re.search(r"Edge TPU Compiler version ([\w.]+)", stdout + log)
    if version:
        result["version"] = version.group(1)
    fields = {
        "On-chip memory used for caching model parameters": "on_chip_bytes",
        "On-chip memory remaining for caching model parameters": "on_chip_remaining_bytes",
        "Off-chip memory used for streaming uncached model parameters": "off_chip_bytes",
    }
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in fields:
            result[fields[key.strip()]] = _bytes(value)
        elif key.strip() == "Number of Edge TPU subgraphs":
            result["subgraphs"] = int(value)
        elif key.strip() == "Total number of operations":
            result["operations"] = int(value)
    for line in log.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(.+?)\s*$", line)
        if m and m.group(1) != "Operator":
            status = m.group(3)
            result["ops"].append(
                {
                    "op": m.group(1),
                    "count": int(m.group(2)),
                    "status": status,
                    "mapped": status.startswith("Mapped to Edge TPU"),
                }
            )
    if result["ops"]:
        result["mapped_ops"] = sum(o["count"] for o in result["ops"] if o["mapped"])
        result["cpu_ops"] = sum(o["count"] for o in result["ops"] if not o["mapped"])
    return result


def run_compiler(path: Path, compiler: str, timeout: int = 600) -> tuple[Path | None, dict]:
    """Compile ``path`` next to itself; returns (``*_edgetpu.tflite`` or None, parsed output)."""
    out_dir = path.parent
    proc = subprocess.run(
        [compiler, "-s", "-o", str(out_dir), str(path)], capture_output=True, text=True, timeout=timeout
    )
    log_path = out_dir / f"{path.stem}_edgetpu.log"
    parsed = parse_compiler_output(proc.stdout + proc.stderr, log_path.read_text() if log_path.exists() else "")
    compiled = compiled_path(path)
    if proc.returncode != 0 or not compiled.exists():
        parsed["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["compiler failed"]
        return None, parsed
    return compiled, parsed


def export(source: SourceModel, path: Path, options: ExportOptions) -> ExportInfo:
    from converters.tflite import convert_bytes

    Path(path).write_bytes(convert_bytes(source, replace(options, precision="int8")))
    report = compatibility_report(path)
    notes = [report.summary()]
    details: dict = {}
    compiler = find_compiler()
    if compiler is None:
        notes.append(INSTALL_HINT)
    else:
        final = Path(path).with_name(options.final_name or Path(path).name)
        staged = final.with_suffix(".compiling.tflite")
        shutil.copyfile(path, staged)
        try:
            compiled, parsed = run_compiler(staged, compiler)
            if compiled is not None:
                target = compiled_path(final)
                compiled.replace(target)
                details["edgetpu_model"] = str(target)
                notes.append(
                    f"compiled with edgetpu_compiler {parsed.get('version', '')}: {target.name} "
                    f"({parsed.get('subgraphs', '?')} Edge TPU subgraph(s), "
                    f"{parsed.get('mapped_ops', '?')} ops on the Edge TPU, {parsed.get('cpu_ops', '?')} on the CPU)"
                )
            else:
                notes.append(f"edgetpu_compiler failed: {parsed.get('error', ['?'])[0]}")
            report = replace(report, compiler=parsed)
        finally:
            for leftover in staged.parent.glob(f"{staged.stem}*"):
                leftover.unlink(missing_ok=True)
    details["edgetpu"] = report.to_dict()
    return ExportInfo(tuple(notes), details)
