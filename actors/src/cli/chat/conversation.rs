//! The chat history `edgeray chat` sends with every question (OpenAI `messages`).

use serde_json::{Value, json};

/// One conversation: an optional system prompt and the turns so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    system: Option<String>,
    turns: Vec<(String, String)>,
}

impl Conversation {
    /// An empty conversation, with `system` as the system message when given.
    pub fn new(system: Option<String>) -> Self {
        Conversation {
            system: system.filter(|s| !s.trim().is_empty()),
            turns: Vec::new(),
        }
    }

    /// The `messages` of a request asking `question` after the turns so far.
    pub fn messages_for(&self, question: &str) -> Value {
        let mut m = Vec::with_capacity(2 + 2 * self.turns.len());
        if let Some(s) = &self.system {
            m.push(json!({"role": "system", "content": s}));
        }
        for (q, a) in &self.turns {
            m.push(json!({"role": "user", "content": q}));
            m.push(json!({"role": "assistant", "content": a}));
        }
        m.push(json!({"role": "user", "content": question}));
        Value::Array(m)
    }

    /// Records a finished (or stopped: the part received) turn.
    pub fn push(&mut self, question: String, answer: String) {
        self.turns.push((question, answer));
    }

    /// Forgets the turns (keeps the system prompt).
    pub fn reset(&mut self) {
        self.turns.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_goes_out_in_order_and_reset_keeps_the_system_prompt() {
        let mut c = Conversation::new(Some("Be brief.".into()));
        assert_eq!(
            c.messages_for("hi"),
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        );
        c.push("hi".into(), "Hello!".into());
        c.push("name?".into(), "Gem".into());
        let m = c.messages_for("more");
        let roles: Vec<&str> = m
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant", "user"]
        );
        assert_eq!(m[4]["content"], "Gem");
        assert_eq!(c.turns.len(), 2);
        c.reset();
        assert!(c.turns.is_empty());
        assert_eq!(c.messages_for("x").as_array().unwrap().len(), 2);
        assert_eq!(
            Conversation::new(Some("  ".into()))
                .messages_for("x")
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
