//! Stop-string matching over streamed text: text that might be the start of a stop string is
//! held back until it is known not to be; the stop string itself is never emitted.

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Emit this text and continue.
    Continue(String),
    /// Emit this text; a stop string was found, generation should stop.
    Stopped(String),
}

/// Incremental stop-string matcher.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feed the next piece of text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_string());
        }
        self.pending.push_str(text);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        // hold back the longest suffix that is a proper prefix of a stop string
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in self.pending.char_indices() {
                let suffix = &self.pending[i..];
                if suffix.len() < s.len() && s.starts_with(suffix) {
                    hold = hold.max(suffix.len());
                    break;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Continue(out)
    }

    /// The text still held back (call when generation ends without a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stops_across_pieces_and_holds_prefixes() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D tail"]),
            ("hello ".to_string(), true)
        );
        assert_eq!(
            run(&["END"], &["hello E", "N", "x"]),
            ("hello ENx".to_string(), false)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_string(), false));
        assert_eq!(
            run(&["\n\n", "é!"], &["ab é", "!"]),
            ("ab ".to_string(), true)
        );
        let stops = vec!["xyz".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("abx"), StopOutcome::Continue("ab".into()));
        assert_eq!(m.push("y"), StopOutcome::Continue(String::new()));
        assert_eq!(m.finish(), "xy");
    }
}
