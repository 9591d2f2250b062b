#!/usr/bin/env python3
"""Runs an ONNX model in onnxruntime (CPU, graph optimizations off), npz in, npz out.

Usage: ort_run.py MODEL.onnx INPUTS.npz OUTPUTS.npz
Inputs are matched to graph inputs by name; outputs are written under the graph's names.
Used by jetc's tests as the independent reference for exported models.
"""
import sys

import numpy as np
import onnxruntime as ort


def main() -> int:
    model, inputs, out = sys.argv[1:4]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(inputs))
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})
    np.savez(out, **dict(zip(names, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
