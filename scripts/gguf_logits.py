#!/usr/bin/env python3
"""Logits of a GGUF model through transformers' own GGUF loader (de-quantized, fp32): the
independent reference for jetc's GGUF import (tests/gguf_import.rs).

    python scripts/gguf_logits.py MODEL.gguf OUT.npz ID [ID ...]

Writes `logits` [1, len(ids), vocab] (float32) into OUT.npz. Needs torch, transformers and gguf
(scripts/requirements-fixtures.txt).
"""
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    path, out, ids = Path(sys.argv[1]), sys.argv[2], [int(x) for x in sys.argv[3:]]
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    np.savez(out, logits=logits.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
