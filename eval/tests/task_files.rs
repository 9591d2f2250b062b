//! The multiple-choice reader on the real task files (`scripts/fetch_eval_data.py` writes
//! them to $JETC_EVAL_DIR, as scripts/test.sh does; without it the test skips, which CI does
//! not accept). The reader's gold choice is checked against each question's own record as
//! released (the `doc` field the reader does not look at): ARC and HellaSwag `gold`, PIQA
//! `label` and `sol1`/`sol2`, WinoGrande `answer` ("1"/"2") and `option1`/`option2`, MMLU
//! `answer` and `choices`, basic arithmetic `gold`; and the question counts against
//! sources.json. The generative files: their example counts; SQuAD's answers are spans of
//! the passage; GSM8K's gold number is the final number of its own worked solution.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use jetc_eval::generative::{self, Compare};
use jetc_eval::{choice, CHOICE_TASKS, GENERATIVE_TASKS};
use serde_json::Value;

fn eval_dir() -> Option<PathBuf> {
    match std::env::var_os("JETC_EVAL_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None if std::env::var_os("CI").is_some() => panic!("CI: JETC_EVAL_DIR is not set (scripts/test.sh runs scripts/fetch_eval_data.py)"),
        None => {
            eprintln!("skipping: JETC_EVAL_DIR is not set");
            None
        }
    }
}

/// The released record of each question, by doc_id, read straight from the file.
fn docs(path: &std::path::Path) -> BTreeMap<u64, Value> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        out.entry(v["doc_id"].as_u64().unwrap()).or_insert_with(|| v["doc"].clone());
    }
    out
}

/// The gold choice's index and text as the record states them.
fn released_gold(task: &str, doc: &Value) -> (usize, String) {
    let s = |k: &str| doc[k].as_str().unwrap_or_else(|| panic!("{task}: no `{k}` in {doc}")).to_string();
    let n = |k: &str| doc[k].as_u64().unwrap_or_else(|| panic!("{task}: no integer `{k}` in {doc}")) as usize;
    match task {
        "arc-e" | "arc-c" | "hellaswag" | "arith" => {
            let g = n("gold");
            (g, doc["choices"][g].as_str().unwrap().to_string())
        }
        "piqa" => {
            let g = n("label");
            (g, s(&format!("sol{}", g + 1)))
        }
        "winogrande" => {
            let g: usize = s("answer").parse::<usize>().unwrap() - 1;
            (g, s(&format!("option{}", g + 1)))
        }
        "mmlu" | "mmlu-dev" => {
            let g = n("answer");
            (g, doc["choices"][g].as_str().map(str::to_string).unwrap_or_else(|| doc["choices"][g].to_string()))
        }
        _ => panic!("no released-gold rule for {task}"),
    }
}

#[test]
fn reader_gold_matches_each_questions_own_record() {
    let Some(dir) = eval_dir() else { return };
    let sources: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sources.json")).unwrap()).unwrap();
    for &task in CHOICE_TASKS {
        let path = dir.join(format!("{task}.jsonl.gz"));
        let questions = choice::read(task, &path).unwrap();
        let records = docs(&path);
        assert_eq!(questions.len() as u64, sources["tasks"][task]["questions"].as_u64().unwrap(), "{task}: question count");
        assert_eq!(questions.len(), records.len(), "{task}");
        let mut gold_counts = BTreeMap::new();
        for q in &questions {
            let (g, text) = released_gold(task, &records[&q.id]);
            assert_eq!(q.gold, g, "{task} question {}: gold", q.id);
            let (context, continuation) = &q.choices[q.gold];
            // WinoGrande puts the option into the context; the others score it as the continuation.
            let scored = if task == "winogrande" { context } else { continuation };
            assert!(scored.contains(text.trim()), "{task} question {}: gold text {text:?} not in {scored:?}", q.id);
            *gold_counts.entry(q.gold).or_insert(0usize) += 1;
        }
        // A reader that always returned choice 0 would fail above; the golds are spread too.
        assert!(gold_counts.len() >= 2, "{task}: every gold is the same choice: {gold_counts:?}");
    }
}

/// The share of `examples` whose first answer, normalized, is in the normalized prompt.
fn answer_in_context(examples: &[generative::Example]) -> f64 {
    let hits = examples.iter().filter(|e| generative::normalize(&e.context).contains(&generative::normalize(&e.answers[0]))).count();
    hits as f64 / examples.len() as f64
}

#[test]
fn generative_files_hold_their_released_answers() {
    let Some(dir) = eval_dir() else { return };
    let sources: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sources.json")).unwrap()).unwrap();
    for &task in GENERATIVE_TASKS {
        let ex = generative::read(task, &dir.join(format!("{task}.jsonl.gz"))).unwrap();
        assert_eq!(ex.len() as u64, sources["tasks"][task]["examples"].as_u64().unwrap(), "{task}: example count");
        for e in &ex {
            // Every gold answer matches itself under the task's comparison.
            assert_eq!(generative::compare(Compare::of_task(task), &e.answers[0], &e.answers), (1.0, 1.0), "{task} example {}", e.id);
            assert!(e.context.trim_end().ends_with(':'), "{task} example {}: the prompt should end at `Answer:`", e.id);
        }
        match task {
            // Extractive: the answer is a span of the passage in the prompt.
            "squad" => assert!(answer_in_context(&ex) > 0.98, "squad: {}", answer_in_context(&ex)),
            "coqa" => assert!(answer_in_context(&ex) > 0.5, "coqa: {}", answer_in_context(&ex)),
            "gsm8k" => {
                for e in &ex {
                    assert_eq!(generative::final_number(&e.gold), generative::final_number(&e.answers[0]), "gsm8k example {}: {:?}", e.id, e.gold);
                }
            }
            _ => {}
        }
    }
}
