//! [`ExtraRoutes`]: routes a program adds beside the OpenAI API (e.g. `serve`'s dashboard at
//! `/` and `/api/cluster`), served behind the same access layers.

/// Extra axum routes merged into [`super::Gateway::router`]; none by default.
#[derive(Clone, Default)]
pub struct ExtraRoutes(pub Option<axum::Router>);

impl std::fmt::Debug for ExtraRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ExtraRoutes(some)"
        } else {
            "ExtraRoutes(none)"
        })
    }
}

/// Routers cannot be compared: two values are equal only when neither holds routes.
impl PartialEq for ExtraRoutes {
    fn eq(&self, other: &Self) -> bool {
        self.0.is_none() && other.0.is_none()
    }
}
