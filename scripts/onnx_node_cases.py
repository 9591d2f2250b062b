#!/usr/bin/env python3
"""Writes ONNX's own node conformance cases (the `onnx` package's
`onnx.backend.test.case.node`, generated in memory, not vendored) as files jetc's test reads.

    onnx_node_cases.py OUT [--ops LinearAttention,CausalConvWithState]

For every case (only those whose graph uses one of --ops, when given):
    OUT/<case>/model.onnx
    OUT/<case>/in_<k>.npz, OUT/<case>/out_<k>.npz   data set k, arrays named as the graph's
                                                  inputs and outputs
and OUT/cases.json: one entry per case with its op types, opsets, rtol/atol and, for a case
whose data cannot go through an npz (sequences, optionals, dtypes the npz reader does not
take), `unfeedable` with the reason.
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np

# The npz dtypes jetc reads (runtime/src/npz.rs).
FEEDABLE = {np.dtype(t) for t in ("<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1")}


def as_array(x):
    """The case value as a numpy array, or a reason why it has none."""
    from onnx import TensorProto, numpy_helper

    if isinstance(x, TensorProto):
        try:
            x = numpy_helper.to_array(x)
        except Exception as e:  # noqa: BLE001 - any conversion failure makes it unfeedable
            return None, f"tensor proto: {e}"
    if x is None:
        return None, "an absent optional value"
    if isinstance(x, (list, tuple, dict)):
        return None, f"a {type(x).__name__} (sequence/map) value"
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        return None, f"a {type(x).__name__} value"
    if x.dtype not in FEEDABLE:
        return None, f"dtype {x.dtype}"
    return x, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--ops", default="", help="comma-separated op types (default: every case)")
    a = ap.parse_args()
    wanted = {o for o in a.ops.split(",") if o}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        cases = collect_testcases()
    os.makedirs(a.out, exist_ok=True)
    index = []
    for c in cases:
        ops = sorted({(n.domain or "", n.op_type) for n in c.model.graph.node})
        if wanted and not any(op in wanted for _, op in ops):
            continue
        entry = {
            "name": c.name,
            "ops": [f"{d}::{o}" if d else o for d, o in ops],
            "opsets": {(o.domain or ""): o.version for o in c.model.opset_import},
            "rtol": float(c.rtol),
            "atol": float(c.atol),
            "data_sets": 0,
        }
        names_in = [i.name for i in c.model.graph.input]
        names_out = [o.name for o in c.model.graph.output]
        sets = []
        for ins, outs in c.data_sets:
            arrays = []
            for names, values in ((names_in, ins), (names_out, outs)):
                if len(values) != len(names):
                    entry["unfeedable"] = f"{len(values)} values for {len(names)} graph names"
                    break
                named = {}
                for n, v in zip(names, values):
                    arr, why = as_array(v)
                    if why:
                        entry["unfeedable"] = f"`{n}`: {why}"
                        break
                    named[n] = arr
                if "unfeedable" in entry:
                    break
                arrays.append(named)
            if "unfeedable" in entry:
                break
            sets.append(arrays)
        if "unfeedable" not in entry:
            d = os.path.join(a.out, c.name)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "model.onnx"), "wb") as f:
                f.write(c.model.SerializeToString())
            for k, (ins, outs) in enumerate(sets):
                np.savez(os.path.join(d, f"in_{k}.npz"), **ins)
                np.savez(os.path.join(d, f"out_{k}.npz"), **outs)
            entry["data_sets"] = len(sets)
        index.append(entry)
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)
    print(f"{len(index)} cases ({sum('unfeedable' not in e for e in index)} feedable) in {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
