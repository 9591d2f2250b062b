#!/usr/bin/env python3
"""Merges jetc-{2b,4b}.json (from `jetc gpu-bench`) and peers.json into a Markdown table:
jetc's fused decode step and chunked prefill (pass 1 + pass 2) next to fla and PyTorch."""
import argparse
import json
import os


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    lines = ["# jetc GPU check", ""]
    peers = load(os.path.join(a.dir, "peers.json")) or {"rows": []}
    for model in ("2b", "4b"):
        j = load(os.path.join(a.dir, f"jetc-{model}.json"))
        if not j:
            lines.append(f"(no jetc results for {model})")
            continue
        lines += [f"## Jet-Nemotron-{model.upper()} on {j.get('device', '?')}", "",
                  "| kernel | batch | seq | jetc ms | max rel err | GB/s | status |", "|---|---|---|---|---|---|---|"]
        for r in j["results"]:
            ms = f"{r['ms']:.4f}" if r.get("ms") is not None else "-"
            err = f"{r['max_err']:.2e}" if r.get("max_err") is not None else "-"
            gb = f"{r['gbps']:.0f}" if r.get("gbps") is not None else "-"
            lines.append(f"| {r['kernel']} | {r['batch']} | {r['seq']} | {ms} | {err} | {gb} | {r.get('error') or 'ok'} |")
        lines += ["", "| decode batch | jetc fused step ms | fla fused_recurrent (graph) ms | PyTorch+fla mixer (graph) ms | PyTorch mixer (graph) ms | fp32 state floor ms |",
                  "|---|---|---|---|---|---|"]
        dec = {r["batch"]: r for r in j["results"] if r["family"] == "jet_decode" and r.get("ms") is not None}
        for p in peers["rows"]:
            if p.get("model") == model and p.get("op") == "decode":
                jm = dec.get(p["batch"], {}).get("ms")
                f = lambda k: f"{p[k]:.4f}" if k in p else "-"
                lines.append(f"| {p['batch']} | {jm if jm is None else f'{jm:.4f}'} | {f('fla_fused_recurrent_graph_ms')} | {f('torch_mixer_fla_graph_ms')} | {f('torch_mixer_graph_ms')} | {f('state_floor_ms')} |")
        lines += ["", "| prefill B x T | jetc pass1 + pass2 ms | fla chunk_gated_delta_rule ms |", "|---|---|---|"]
        for p in peers["rows"]:
            if p.get("model") == model and p.get("op") == "prefill":
                parts = [r["ms"] for r in j["results"] if r["family"] in ("gdn_chunk_prep", "gdn_chunk_state")
                         and r["batch"] == p["batch"] and r["seq"] == p["seq"] and r.get("ms") is not None]
                jm = f"{sum(parts):.4f}" if len(parts) == 2 else "-"
                lines.append(f"| {p['batch']} x {p['seq']} | {jm} | {p['fla_chunk_ms']:.4f} |")
        lines.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
