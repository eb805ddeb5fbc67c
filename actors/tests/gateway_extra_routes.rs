//! Routes added beside the API (`GatewayConfig::extra_routes`, e.g. serve's dashboard) are
//! served behind the same access layers: with an API key, the static page at `/` loads without
//! it (it asks for the key), everything else needs it.

use axum::routing::get;
use edgeray::gateway::{
    AccessConfig, ApiKey, EchoBackend, EchoConfig, ExtraRoutes, Gateway, GatewayConfig,
};
use std::sync::Arc;

const KEY: &str = "0123456789abcdef0123";

#[tokio::test]
async fn extra_routes_sit_behind_the_key_except_the_page() {
    let extra = axum::Router::new()
        .route("/", get(|| async { "page" }))
        .route("/api/cluster", get(|| async { "data" }));
    let config = GatewayConfig {
        access: AccessConfig {
            api_key: Some(ApiKey::new(KEY).unwrap()),
            ..AccessConfig::default()
        },
        extra_routes: ExtraRoutes(Some(extra)),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(Arc::new(EchoBackend::new(EchoConfig::default())), config).unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", running.local_addr);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();

    let r = c.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "page");
    let r = c.get(format!("{base}/api/cluster")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/api/cluster"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "data");
    // The API itself is unchanged: still keyed, unknown paths still 404.
    let r = c.get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/nope"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    running.shutdown().await.unwrap();
}
