//! Bandwidth probes, the I/O part: the prober times a [`PROBE_BYTES`] transfer to one peer at a
//! time, as [`ProbeSchedule`] says, and records the estimate in the membership table; the
//! receiving side reads the payload and acknowledges it. The schedule and the estimator are in
//! [`super::bandwidth`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use super::Shared;
use super::bandwidth::{
    BandwidthEstimate, FIRST_PROBE_AFTER, PROBE_BYTES, PROBE_CHUNK, PROBE_INTERVAL, ProbeSchedule,
    estimate_bps,
};
use super::messages::{PROBE_STREAM_KIND, ProbeAck, ProbeData, ProbeEnd, probe_reply_types};
use crate::identity::NodeId;
use crate::membership::MemberState;
use crate::transport::IncomingStream;
use crate::wire::WireMessage;

/// How often the prober looks at its schedule.
const TICK: Duration = Duration::from_millis(500);

/// Longest a probe may take (a slow link gives no estimate rather than a stuck prober).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most payload bytes a receiver accepts on one probe stream.
const MAX_RECEIVE: u64 = 2 * PROBE_BYTES as u64;

/// Answers peers' probes: reads the payload, then acknowledges the bytes received.
pub(crate) async fn serve_probes(mut streams: mpsc::Receiver<IncomingStream>) {
    while let Some(mut s) = streams.recv().await {
        tokio::spawn(async move {
            let peer = s.peer;
            let mut got = 0u64;
            let read = async {
                loop {
                    let f = s.reader.read_frame().await.ok().flatten()?;
                    if f.msg_type == <ProbeEnd as WireMessage>::TYPE {
                        return Some(());
                    }
                    got += f.tail.len() as u64;
                    if got > MAX_RECEIVE {
                        return None;
                    }
                }
            };
            if tokio::time::timeout(PROBE_TIMEOUT, read)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                debug!(peer = %peer.short(), "probe stream ended without its end marker");
                return;
            }
            if let Some(mut w) = s.writer.take() {
                let _ = w.send(&ProbeAck { bytes: got }, Bytes::new()).await;
                let _ = w.finish();
                // Keep the stream open until the prober has read the acknowledgement.
                let _ = tokio::time::timeout(Duration::from_secs(2), s.reader.read_frame()).await;
            }
        });
    }
}

/// Probes the Up peers one at a time, as the schedule says, until the node stops.
pub(crate) async fn run_prober(shared: Arc<Shared>) {
    let mut schedule = ProbeSchedule::new(FIRST_PROBE_AFTER, PROBE_INTERVAL);
    let mut estimates: HashMap<NodeId, BandwidthEstimate> = HashMap::new();
    let mut stopped = shared.stopped.subscribe();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let peers: Vec<NodeId> = shared
            .membership
            .lock()
            .members()
            .filter(|m| !m.is_self && m.state == MemberState::Up)
            .map(|m| m.node_id)
            .collect();
        let now = Instant::now();
        schedule.sync(&peers, now);
        estimates.retain(|id, _| peers.contains(id));
        let Some(peer) = schedule.next_due(now) else {
            continue;
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe(&shared, peer)).await {
            Ok(Ok((bytes, elapsed))) => {
                let rtt = shared.transport.rtt(peer);
                if let Some(sample) = estimate_bps(bytes, elapsed, rtt) {
                    let e = estimates.entry(peer).or_default();
                    e.update(sample);
                    if let Some(bps) = e.bps() {
                        shared.membership.lock().set_bandwidth(peer, bps);
                        debug!(peer = %peer.short(), mbit = bps / 1e6, "bandwidth measured");
                    }
                }
            }
            Ok(Err(e)) => debug!(peer = %peer.short(), error = %e, "bandwidth probe failed"),
            Err(_) => debug!(peer = %peer.short(), "bandwidth probe timed out"),
        }
    }
}

/// One timed transfer to `peer`: payload bytes acknowledged and the time from the first byte
/// sent to the acknowledgement.
async fn probe(shared: &Shared, peer: NodeId) -> Result<(u64, Duration), String> {
    let (mut w, mut r) = shared
        .transport
        .open_bi(peer, PROBE_STREAM_KIND, 0, probe_reply_types())
        .await
        .map_err(|e| e.to_string())?;
    let chunk = Bytes::from(vec![0u8; PROBE_CHUNK]);
    let t0 = Instant::now();
    let mut sent = 0usize;
    while sent < PROBE_BYTES {
        w.send(&ProbeData {}, chunk.clone())
            .await
            .map_err(|e| e.to_string())?;
        sent += PROBE_CHUNK;
    }
    w.send(&ProbeEnd { bytes: sent as u64 }, Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    let ack = r
        .read_message::<ProbeAck>()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the peer closed the probe stream")?
        .0;
    let elapsed = t0.elapsed();
    let _ = w.finish();
    if ack.bytes != sent as u64 {
        return Err(format!("the peer received {} of {sent} bytes", ack.bytes));
    }
    Ok((ack.bytes, elapsed))
}
