#!/usr/bin/env python3
"""Runs onnxruntime's transformer optimizer (onnxruntime.transformers.optimizer, as optimum's
-O2 and users' scripts do) on an ONNX decoder: SkipSimplifiedLayerNormalization and the other
contrib fusions it finds. Used by tests/fixtures.rs to check that jetc raises such graphs.

    python scripts/ort_optimize.py SRC.onnx DST.onnx HEADS HIDDEN
"""
import sys

from onnxruntime.transformers.optimizer import optimize_model

src, dst, heads, hidden = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = optimize_model(src, model_type="gpt2", num_heads=heads, hidden_size=hidden, opt_level=0)
model.save_model_to_file(dst)
