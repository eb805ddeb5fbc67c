//! [`Readiness`]: whether a backend can take requests right now, as `GET /health` reports it.

/// Whether a [`super::CompletionBackend`] can take requests right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Readiness {
    /// Serving: `/health` answers 200 `{"status": "ok"}`.
    #[default]
    Ready,
    /// A node failed and the pipeline is being redeployed: `/health` answers 503
    /// `{"status": "redeploying"}` until the new pipeline serves.
    Redeploying,
    /// A node failed and no redeployment is possible (the reason): `/health` answers 503
    /// `{"status": "failed", "reason": …}`.
    Failed(String),
}

impl Readiness {
    /// The `status` word of `/health`: `ok`, `redeploying` or `failed`.
    pub fn status_word(&self) -> &'static str {
        match self {
            Readiness::Ready => "ok",
            Readiness::Redeploying => "redeploying",
            Readiness::Failed(_) => "failed",
        }
    }

    /// Whether requests can be served (`/health` 200).
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_is_ready_and_words_differ() {
        assert!(Readiness::Ready.is_ready());
        assert!(!Readiness::Redeploying.is_ready());
        assert!(!Readiness::Failed("x".into()).is_ready());
        assert_eq!(Readiness::Ready.status_word(), "ok");
        assert_eq!(Readiness::Redeploying.status_word(), "redeploying");
        assert_eq!(Readiness::Failed("x".into()).status_word(), "failed");
    }
}
