//! `GET /health` follows the backend's readiness: 200 while serving, 503 while redeploying or
//! after the pipeline could not be redeployed, and 200 again once it serves.

use edgeray::gateway::{EchoBackend, EchoConfig, Gateway, GatewayConfig, Readiness};
use serde_json::Value;
use std::sync::Arc;

async fn health(base: &str) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

#[tokio::test]
async fn health_is_503_while_redeploying_or_failed() {
    let backend = EchoBackend::new(EchoConfig::default());
    let gw = Gateway::new(Arc::new(backend.clone()), GatewayConfig::default()).unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", running.local_addr);

    let (code, v) = health(&base).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")), "{v}");

    backend.set_readiness(Readiness::Redeploying);
    let (code, v) = health(&base).await;
    assert_eq!(
        (code, v["status"].as_str()),
        (503, Some("redeploying")),
        "{v}"
    );
    assert_eq!(v["model"], "edgeray-echo");

    backend.set_readiness(Readiness::Failed("no node has room for stage 2".into()));
    let (code, v) = health(&base).await;
    assert_eq!((code, v["status"].as_str()), (503, Some("failed")), "{v}");
    assert_eq!(v["reason"], "no node has room for stage 2");

    backend.set_readiness(Readiness::Ready);
    let (code, v) = health(&base).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")), "{v}");
    assert!(v.get("reason").is_none());
    running.shutdown().await.unwrap();
}
