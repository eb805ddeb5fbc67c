//! The prompts of `generate` and `run`: one on the command line, or a file of them answered one
//! after another (one model load and one deployment for all), each answer printed as one JSON
//! line so that answers holding newlines stay apart.

use std::path::PathBuf;

use anyhow::Context;

/// `--prompt TEXT` or `--prompt-file FILE`.
#[derive(Debug, clap::Args)]
pub struct PromptArgs {
    /// Prompt text (raw, or the user message with `--chat`).
    #[arg(
        long,
        required_unless_present = "prompt_file",
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Prompts, one per line (blank lines skipped), answered one after another; each answer
    /// is printed on stdout as one JSON line `{"prompt": "...", "text": "..."}`.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
}

impl PromptArgs {
    /// The prompts, in order.
    pub fn prompts(&self) -> anyhow::Result<Vec<String>> {
        match (&self.prompt, &self.prompt_file) {
            (Some(p), _) => Ok(vec![p.clone()]),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the prompt file {}", f.display()))?;
                let prompts = parse_prompt_lines(&text);
                anyhow::ensure!(!prompts.is_empty(), "{} holds no prompt", f.display());
                Ok(prompts)
            }
            (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
        }
    }

    /// Whether answers go out as JSON lines (a prompt file) rather than streamed text.
    pub fn json_lines(&self) -> bool {
        self.prompt_file.is_some()
    }
}

/// The non-blank lines of a prompt file, each without its line ending.
pub fn parse_prompt_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// One answer as a JSON line (no trailing newline).
pub fn answer_line(prompt: &str, text: &str) -> String {
    serde_json::json!({ "prompt": prompt, "text": text }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lines_and_answers() {
        assert_eq!(
            parse_prompt_lines("a b\r\n\n  \nc\n"),
            vec!["a b".to_string(), "c".to_string()]
        );
        let line = answer_line("q", "x\ny \"z\"");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["text"], "x\ny \"z\"");
        assert_eq!(v["prompt"], "q");
    }
}
