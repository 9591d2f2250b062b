//! Text around a model: the tokenizer (built from GGUF metadata or a `tokenizer.json`) and
//! the chat template. Being built (issue 5).
