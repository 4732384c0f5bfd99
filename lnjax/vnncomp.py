r"""VNN-COMP instances: an ONNX network and a VNN-LIB property in, the competition's result out; and
competition-style suites written from lnjax models.

  python -m lnjax.vnncomp NET.onnx PROP.vnnlib --timeout 60 --results out.txt [--seed 0]

The contract (VNN-COMP rules): the result file's first line is one of
  unsat     the property holds: every case of the VNN-LIB file was proven ROBUST;
  sat       a counterexample, followed by it as `((X_0 v)\n (X_1 v) ... (Y_0 v) ...)`, X in the ONNX
            input's own row-major order (NCHW for images), Y the network's outputs there;
  timeout   the time ran out with a case undecided;
  unknown   undecided for another reason (e.g. a counterexample the re-check refused);
  error     the network or the property could not be loaded or is not supported (the CLI also prints
            one `error: ...` line on stderr and exits with 2).

`run_instance` is the core (the experiment `experiments/vnncomp.py` and `benchmarks/vnncomp_bench.py`
call it). It loads the network (`lnjax.io.onnx.load_onnx`) and the property (`load_vnnlib`, the boxes
in our NHWC layout), maps each case's output disjuncts onto a `lnjax.specs.Linear` spec
(`lnjax.io.vnnlib.to_spec`), builds the default staged verifier with `input_domain=None` (the
VNN-LIB box is used exactly as given: an imported network's inputs may be normalised or signed,
and clipping to [0, 1] would verify a smaller box than asked) and warms it up. That preparation is
timed separately (`prepare_seconds`) and not counted in the run time, as in the competition. Then
each case is verified with what is left of `timeout`; a NOT_ROBUST verdict's counterexample is
re-checked before it is written: it lies in the case's box (float32, the file's box rounded
outward), and the network evaluated on it — with ONNX Runtime when it is installed (an independent
implementation of the graph, float32), else lnjax's float64 forward of the imported layers — violates
the property (`violated`, tolerance 0; the competition's checker allows 1e-4). A counterexample that
fails is not written: the result is `unknown`, with the reason in `notes` (and on stderr).

A `VerifierCache` keeps each network loaded, its verifier built and warmed up across instances
(warm-up per spec size; each instance's timeout is passed per query), so a suite pays the
compilation once per network and every instance's cost predictions come from the same verifier.

`write_suite` exports lnjax models to ONNX and writes argmax-robustness properties (L∞ boxes
clipped to [0, 1]) and an `instances.csv` laid out as the competition's benchmarks are.

References:
  VNN-COMP rules and scripts (e.g. https://sites.google.com/view/vnn2024): the instance contract,
    the result-file format and the counterexample check; VNN-LIB, https://www.vnnlib.org.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lnjax import models
from lnjax.io import to_json, write_bytes_atomic
from lnjax.io.onnx import OnnxModel, load_onnx, save_onnx
from lnjax.io.vnnlib import (
    VnnlibCase,
    argmax_disjuncts,
    counterexample_text,
    load_vnnlib,
    nhwc_to_nchw,
    to_spec,
    violated,
    write_vnnlib,
)
from lnjax.specs import Linear
from lnjax.types import Params
from lnjax.verify import MilpWorker, Status, Verdict, Verifier, VerifierConfig, make_verifier, shared_worker
from lnjax.verify.milp import MilpNetwork, network_forward, network_from_view

RESULTS = ("sat", "unsat", "timeout", "unknown", "error")
"""The first line of a result file."""

WARM_SHRINK = 1e-3
"""The warm-up box: the first case's box shrunk around its centre by this factor (the bounds settle
it at once; its property is not analysed)."""


class InstanceResult(NamedTuple):
    """What `run_instance` found.

    result: one of RESULTS; counterexample_text: the `((X_0 v) ...)` list for "sat", else None;
    seconds: the run time (verification and re-checks, not the preparation); prepare_seconds:
    loading the files, building the verifier and warming it up (with a cache that holds the network
    warmed up: loading the property only);
    notes: one line per case (status, deciding stage, seconds) and anything surprising (an error's
    message first, a refused counterexample's reason); rejected: counterexamples the re-check
    refused; decided_by: the deciding stage of each case run (None: undecided).
    """

    result: str
    counterexample_text: str | None
    seconds: float
    prepare_seconds: float
    notes: tuple[str, ...]
    rejected: int = 0
    decided_by: tuple[str | None, ...] = ()

    def file_text(self) -> str:
        """The result file's content: the result line, then the counterexample for "sat"."""
        if self.result == "sat":
            return f"sat\n{self.counterexample_text}\n"
        return f"{self.result}\n"


@dataclasses.dataclass
class _Network:
    """One loaded network: the import, its layer view, a reference evaluator and verifiers."""

    onnx: OnnxModel
    view: Any
    num_outputs: int
    onnx_shape: tuple[int, ...]  # per-example, without the batch axis
    session: Any  # an onnxruntime.InferenceSession, or None: the float64 forward of `host`
    host: MilpNetwork | None  # the layers as float64 host data (only without onnxruntime)
    verifier: Verifier | None = None
    warmed: set[int] = dataclasses.field(default_factory=set)  # spec sizes warmed up

    @property
    def nchw(self) -> bool:
        return len(self.onnx_shape) == 3

    @property
    def evaluator(self) -> str:
        return "onnxruntime" if self.session is not None else "lnjax float64 forward"

    def to_onnx_layout(self, x: np.ndarray) -> np.ndarray:
        return nhwc_to_nchw(x) if self.nchw else np.asarray(x)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The network's outputs [K] at one input x in our layout (ONNX Runtime or float64)."""
        if self.session is None:
            assert self.host is not None
            return network_forward(self.host, np.asarray(x, np.float64))
        feed = self.to_onnx_layout(np.asarray(x, np.float32))[None]
        (y,) = self.session.run([self.onnx.output_name], {self.onnx.input_name: feed})
        return np.asarray(y).reshape(-1)


def _onnxruntime_session(path: str) -> Any:
    """An ONNX Runtime session on one thread (the verifier has the cores), or None if onnxruntime is
    not installed or cannot run the file (then the float64 forward re-checks counterexamples)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's own errors (e.g. an opset it lacks) are not the file's fault
        return None


class VerifierCache:
    """Networks loaded once, each with one verifier warmed up per spec size, across instances.

    A network is known by its file (resolved path, size, modification time): a rewritten file is
    loaded again. Compiled stage functions are shared by every verifier with the same options anyway
    (`lnjax.verify`); what the cache saves is the loading, the warm-up runs and the cost predictions
    each verifier collects.

    Args:
      config: the verifier's options (default: `VerifierConfig()`, the default staged verifier);
        `input_domain` is always None here and the time limit is passed per query.
      worker: the MILP worker process (default: the shared one, stopped at exit).
    """

    def __init__(self, config: VerifierConfig | None = None, *, worker: MilpWorker | None = None):
        self.config = dataclasses.replace(config or VerifierConfig(), input_domain=None)
        self.worker = worker
        self._networks: dict[tuple[str, int, int], _Network] = {}

    def network(self, path: str | os.PathLike) -> _Network:
        """The loaded network of an .onnx file (loaded now if new or changed)."""
        resolved = str(Path(path).resolve())
        stat = os.stat(resolved)
        key = (resolved, stat.st_size, stat.st_mtime_ns)
        if key not in self._networks:
            loaded = load_onnx(resolved)
            view = models.layer_view(loaded.model, loaded.params)
            session = _onnxruntime_session(resolved)
            self._networks[key] = _Network(
                onnx=loaded,
                view=view,
                num_outputs=int(math.prod(view.output_shapes[-1])),
                onnx_shape=tuple(int(d) for d in loaded.onnx_input_shape[1:]),
                session=session,
                host=network_from_view(view) if session is None else None,
            )
        return self._networks[key]

    def verifier(self, net: _Network) -> Verifier:
        """The network's verifier (built on first use; queries pass their own `time_limit=`)."""
        if net.verifier is None:
            net.verifier = make_verifier(net.view, self.config, worker=self.worker)
        return net.verifier

    def warm_up(self, net: _Network, case: VnnlibCase, spec: Linear) -> None:
        """Compiles what a query with this spec size runs (once per size): `warm_up` on the case's
        box shrunk around its centre (WARM_SHRINK)."""
        key = int(spec.c.shape[0])
        if key in net.warmed:
            return
        lo, hi = np.asarray(case.lower, np.float64), np.asarray(case.upper, np.float64)
        centre, half = (lo + hi) / 2, (hi - lo) / 2 * WARM_SHRINK
        warm_lo, warm_hi = (centre - half).astype(np.float32), (centre + half).astype(np.float32)
        self.verifier(net).warm_up(jnp.asarray(warm_lo), jnp.asarray(np.maximum(warm_hi, warm_lo)), spec)
        self.wait_for_worker()
        net.warmed.add(key)

    def wait_for_worker(self) -> float:
        """Waits until the MILP worker is idle (after a time-out its replacement imports in the
        background); returns the seconds waited (0 without the "milp" stage)."""
        if "milp" not in self.config.stages:
            return 0.0
        return (self.worker or shared_worker()).wait_ready()


def _ran_out_of_time(verdict: Verdict, limit: float) -> bool:
    """Whether an UNKNOWN verdict ended for lack of time (rather than with every stage done)."""
    notes = " ".join(verdict.stats.notes)
    return (
        "time limit" in notes
        or "not started: predicted" in notes
        or verdict.stats.milp_status == "timeout"
        or verdict.stats.time_s.get("total", 0.0) >= 0.95 * limit
    )


def _recheck(net: _Network, case: VnnlibCase, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(the outputs at x, "") if x lies in the case's box and violates its property, else (None, why)."""
    x = np.asarray(x, np.float32)
    if x.shape != case.lower.shape:
        return None, f"counterexample of shape {x.shape}; the box is {case.lower.shape}"
    outside = int(np.sum((x < case.lower) | (x > case.upper)))
    if outside:
        return None, f"counterexample outside the box at {outside} of {x.size} inputs"
    y = net.outputs(x)
    if not np.all(np.isfinite(y)):
        return None, f"non-finite outputs under {net.evaluator}"
    if not violated(case.disjuncts, y):
        worst = min(float(np.max(a @ np.asarray(y, np.float64) - b)) for a, b in case.disjuncts)
        return None, (
            f"the counterexample violates no disjunct under {net.evaluator} "
            f"(closest: a row exceeds its bound by {worst:.3g})"
        )
    return y, ""


def run_instance(
    onnx_path: str | os.PathLike,
    vnnlib_path: str | os.PathLike,
    timeout: float,
    *,
    key: jax.Array,
    verifier_cache: VerifierCache | None = None,
) -> InstanceResult:
    """Verifies one VNN-COMP instance (see the module docstring for the contract).

    Args:
      onnx_path: the network (`load_onnx`: feed-forward Conv / Gemm / ReLU / pooling graphs).
      vnnlib_path: the property (`load_vnnlib`; single-constraint disjuncts or one conjunction, `to_spec`).
      timeout: seconds for the run (> 0; the preparation is not counted).
      key: a typed PRNG key (the attacks' randomness; case i uses fold_in(key, i)).
      verifier_cache: networks and warmed-up verifiers kept across calls (default: a fresh one).

    Returns:
      InstanceResult. Problems with the files (missing, unreadable, an unsupported op or property)
      are result "error" with the message as the first note; nothing is raised for them.

    Raises:
      ValueError: timeout is not a positive finite number.
    """
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout = {timeout!r}; expected a positive number of seconds")
    timeout = float(timeout)
    t0 = time.monotonic()
    cache = verifier_cache or VerifierCache()
    # Any failure to read the user's files is an "error" result naming the file, not a crash.
    try:
        net = cache.network(onnx_path)
    except Exception as e:
        return _error(_message(e, onnx_path), t0)
    try:
        prop = load_vnnlib(vnnlib_path, net.onnx_shape, net.num_outputs, nhwc=net.nchw)
    except Exception as e:
        return _error(_message(e, vnnlib_path), t0)
    specs = []
    for i, case in enumerate(prop.cases):
        try:
            specs.append(to_spec(case.disjuncts, net.num_outputs))
        except ValueError as e:
            where = f" (input box {i + 1} of {len(prop.cases)})" if len(prop.cases) > 1 else ""
            return _error(f"{vnnlib_path}{where}: {e}", t0)
    try:
        for case, spec in zip(prop.cases, specs, strict=True):
            cache.warm_up(net, case, spec)
    except (ValueError, TypeError) as e:  # e.g. non-finite weights, refused by the verifier
        return _error(_message(e, onnx_path), t0)
    keys = [jax.random.fold_in(key, i) for i in range(len(prop.cases))]  # (compiles once: not in the run)
    prepare = time.monotonic() - t0

    t_run = time.monotonic()
    deadline = t_run + timeout
    notes: list[str] = []
    decided: list[str | None] = []
    robust, rejected, out_of_time = 0, 0, False
    for i, (case, spec) in enumerate(zip(prop.cases, specs, strict=True)):
        left = timeout if i == 0 else deadline - time.monotonic()
        if left <= 0:
            out_of_time = True
            notes.append(f"case {i}: not started, no time left")
            break
        t_case = time.monotonic()
        verify = cache.verifier(net)
        verdict = verify(keys[i], jnp.asarray(case.lower), jnp.asarray(case.upper), spec, time_limit=left)
        cache.wait_for_worker()  # a timed-out MILP's replacement: charged to this instance
        decided.append(verdict.stats.decided_by)
        status = verdict.status
        notes.append(
            f"case {i}: {status.value} by {verdict.stats.decided_by} in {time.monotonic() - t_case:.2f} s"
        )
        robust += status is Status.ROBUST
        if status is Status.NOT_ROBUST:
            assert verdict.counterexample is not None
            y, why = _recheck(net, case, verdict.counterexample)
            if y is not None:
                x_onnx = net.to_onnx_layout(np.asarray(verdict.counterexample, np.float32))
                text = counterexample_text(x_onnx, y)
                return InstanceResult(
                    "sat", text, time.monotonic() - t_run, prepare, tuple(notes), rejected, tuple(decided)
                )
            rejected += 1
            notes.append(f"case {i}: counterexample rejected: {why}")
        elif status is Status.UNKNOWN:
            out_of_time = out_of_time or _ran_out_of_time(verdict, left)
    seconds = time.monotonic() - t_run
    if robust == len(prop.cases):
        result = "unsat"
    elif rejected or not (out_of_time or seconds >= timeout):
        result = "unknown"  # a refused counterexample is never reported as a time-out
    else:
        result = "timeout"
    return InstanceResult(result, None, seconds, prepare, tuple(notes), rejected, tuple(decided))


def _message(e: BaseException, path: str | os.PathLike) -> str:
    """An exception about the file `path` as one line naming it (and the exception's type, unless
    it is one of ours or an OS error that says what happened)."""
    if isinstance(e, FileNotFoundError):
        return f"{path}: no such file or directory"
    text = " ".join(str(e).split())
    if not (isinstance(e, OSError | ValueError | ImportError) and text):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if os.fspath(path) in text else f"{path}: {text}"


def _error(message: str, t0: float) -> InstanceResult:
    return InstanceResult("error", None, 0.0, time.monotonic() - t0, (message,))


def write_result(path: str | os.PathLike, result: InstanceResult) -> None:
    """Writes the result file (atomically): `InstanceResult.file_text`."""
    write_bytes_atomic(path, result.file_text().encode())


# ----------------------------------------------------------------------------------------- suites


class SuiteInstance(NamedTuple):
    """One argmax-robustness instance of `write_suite`.

    net: the network's name (a key of `networks`); name: the property's name (file
    `vnnlib/<net>_<name>.vnnlib`); x: [*input_shape] the image in [0, 1] (our NHWC layout);
    label: the class that must stay the argmax; eps: the L∞ radius.
    """

    net: str
    name: str
    x: np.ndarray
    label: int
    eps: float


def linf_box(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The L∞ box of radius eps around x clipped to [0, 1], float32 (as `benchmarks/bab_bench.py`)."""
    x = np.asarray(x, np.float32)
    return np.clip(x - eps, 0.0, 1.0).astype(np.float32), np.clip(x + eps, 0.0, 1.0).astype(np.float32)


def write_suite(
    directory: str | os.PathLike,
    networks: Mapping[str, tuple[models.Sequential, Params]],
    instances: Sequence[SuiteInstance],
    *,
    timeout: float,
) -> Path:
    """Writes a competition-style benchmark: `onnx/<net>.onnx` (`save_onnx`), one VNN-LIB file per
    instance (`vnnlib/<net>_<name>.vnnlib`: the box `linf_box(x, eps)` in the ONNX layout, violated
    iff some other class scores at least as high as `label`) and `instances.csv` (rows: onnx path,
    vnnlib path, timeout in seconds; paths relative to the CSV, no header). Every file is written
    atomically; a rewrite with the same inputs gives the same bytes.

    Returns:
      The path of instances.csv.

    Raises:
      ValueError: an instance names an unknown network, a repeated (net, name), a label outside the
        network's classes, or a non-positive timeout.
    """
    if not timeout > 0:
        raise ValueError(f"timeout = {timeout!r}; expected a positive number of seconds")
    root = Path(directory)
    (root / "onnx").mkdir(parents=True, exist_ok=True)
    (root / "vnnlib").mkdir(exist_ok=True)
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        if inst.net not in networks:
            raise ValueError(f"instance {inst.name!r} names network {inst.net!r}; known: {sorted(networks)}")
        if (inst.net, inst.name) in seen:
            raise ValueError(f"instance ({inst.net!r}, {inst.name!r}) appears twice")
        seen.add((inst.net, inst.name))
    classes = {}
    for name in sorted({inst.net for inst in instances}):
        model, params = networks[name]
        save_onnx(model, params, root / "onnx" / f"{name}.onnx")
        classes[name] = int(math.prod(models.layer_view(model, params).output_shapes[-1]))
    rows = []
    for inst in instances:
        lo, hi = linf_box(inst.x, inst.eps)
        if lo.ndim == 3:
            lo, hi = nhwc_to_nchw(lo), nhwc_to_nchw(hi)
        vnnlib = f"vnnlib/{inst.net}_{inst.name}.vnnlib"
        write_vnnlib(root / vnnlib, lo, hi, argmax_disjuncts(int(inst.label), classes[inst.net]))
        rows.append(f"onnx/{inst.net}.onnx,{vnnlib},{timeout:g}\n")
    csv = root / "instances.csv"
    write_bytes_atomic(csv, "".join(rows).encode())
    return csv


# -------------------------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, like every other lnjax CLI
        print(f"error: {message} (see python -m lnjax.vnncomp --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lnjax.vnncomp NET.onnx PROP.vnnlib --timeout T --results FILE`; returns the exit
    code (0, or 2 for "error" and for a result file that cannot be written). Prints one JSON line
    (result, seconds, prepare_seconds, notes) on stdout."""
    p = _Parser(prog="python -m lnjax.vnncomp", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("onnx", help="the network (.onnx)")
    p.add_argument("vnnlib", help="the property (.vnnlib)")
    p.add_argument("--timeout", type=float, required=True, help="seconds for the run (preparation excluded)")
    p.add_argument("--results", required=True, help="the result file to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' randomness")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        print(f"error: --timeout {args.timeout:g} must be a positive number of seconds", file=sys.stderr)
        return 2
    result = run_instance(args.onnx, args.vnnlib, args.timeout, key=jax.random.key(args.seed))
    try:
        write_result(args.results, result)
    except OSError as e:
        print(f"error: cannot write --results: {_message(e, args.results)}", file=sys.stderr)
        return 2
    if result.result == "error":
        print(f"error: {result.notes[0]}", file=sys.stderr)
    for note in result.notes:
        if "rejected" in note:
            print(f"unknown: {note}", file=sys.stderr)
    summary = {k: getattr(result, k) for k in ("result", "seconds", "prepare_seconds", "notes")}
    print(to_json(summary), flush=True)
    return 2 if result.result == "error" else 0


if __name__ == "__main__":
    sys.exit(main())
