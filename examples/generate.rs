//! Fetch SmolLM2 (first run only), ask it a question, and stream the answer.
//!
//! ```sh
//! cargo run -p triage-examples --example generate -- "Why is the sky blue?"
//! ```

use std::io::Write;

use triage_models::{Catalog, ModelStore, SMOLLM2};
use triage_runtime::{GenerateParams, LlmHandle, Prompt, StreamEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What does a contract's governing law clause do?".into());
    let files = ModelStore::from_env().ensure(Catalog::builtin().get(SMOLLM2)?)?;
    let llm = LlmHandle::shared(&files.main_file())?;
    let prompt = Prompt::chat(Some("You are a concise legal assistant."), &question);
    let mut events = llm.generate_stream(
        prompt,
        GenerateParams {
            max_tokens: 96,
            ..Default::default()
        },
    );
    while let Some(event) = events.recv().await {
        match event {
            StreamEvent::Token(t) => {
                print!("{}", t.text);
                std::io::stdout().flush()?;
            }
            StreamEvent::Text(text) => print!("{text}"),
            StreamEvent::Done(g) => {
                println!(
                    "\n\n[{} tokens, {:.1} tok/s, mean log-prob {:.2}]",
                    g.stats.generated_tokens,
                    g.stats.generation_tokens_per_s,
                    g.mean_logprob()
                );
            }
            StreamEvent::Failed(e) => anyhow::bail!(e),
        }
    }
    Ok(())
}
