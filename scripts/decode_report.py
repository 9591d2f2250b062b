"""The JSON object bench_ort_decode.py and bench_llama_decode.py print (and
bench_decode_peers.py reads): load, prefill and decode seconds and tokens/s, this process's
peak RSS, and the generated ids."""
import json
import resource


def print_report(load: float, prompt_tokens: int, prefill: float, decode: float, ids: list) -> None:
    steps = len(ids) - 1
    print(json.dumps({
        "load_s": load,
        "prompt_tokens": prompt_tokens,
        "prefill_s": prefill,
        "prefill_tokens_per_s": prompt_tokens / prefill,
        "decode_s": decode,
        "decode_steps": steps,
        "decode_tokens_per_s": steps / decode if decode > 0 else 0.0,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "ids": ids,
    }))
