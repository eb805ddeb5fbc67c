//! Decoding an OpenAI chat-completion stream (server-sent events) as bytes arrive in any
//! chunking: each `data:` event becomes a [`StreamEvent`].

use serde_json::Value;

/// What one event of the stream says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Text of the answer.
    Text(String),
    /// The answer ended (`finish_reason`).
    Finish(String),
    /// Token counts (the final usage chunk).
    Usage {
        /// Tokens of the rendered conversation.
        prompt_tokens: u64,
        /// Tokens generated.
        completion_tokens: u64,
    },
    /// An error event from the server.
    Error(String),
    /// `[DONE]`: the stream is over.
    Done,
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// An event's data is not JSON.
    #[error("the server sent an event that is not JSON: {0}")]
    NotJson(String),
}

/// Splits a byte stream into events; feed chunks as they come.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
}

impl SseDecoder {
    /// The events completed by `chunk` (a partial line is kept for the next chunk).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<StreamEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            let Some(data) = line.strip_prefix("data:") else {
                continue; // blank separators, comments, `event:` lines
            };
            out.extend(parse_data(data.trim_start())?);
        }
        Ok(out)
    }
}

fn parse_data(data: &str) -> Result<Vec<StreamEvent>, SseError> {
    if data == "[DONE]" {
        return Ok(vec![StreamEvent::Done]);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|_| SseError::NotJson(data.chars().take(200).collect()))?;
    let mut out = Vec::new();
    if let Some(e) = v.get("error") {
        let msg = e["message"].as_str().unwrap_or("unknown error").to_string();
        return Ok(vec![StreamEvent::Error(msg)]);
    }
    if let Some(choice) = v["choices"].get(0) {
        if let Some(t) = choice["delta"]["content"].as_str()
            && !t.is_empty()
        {
            out.push(StreamEvent::Text(t.to_string()));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            out.push(StreamEvent::Finish(f.to_string()));
        }
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        out.push(StreamEvent::Usage {
            prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
            completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_decode_once() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo é\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let want = vec![
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo é".into()),
            StreamEvent::Finish("stop".into()),
            StreamEvent::Usage {
                prompt_tokens: 7,
                completion_tokens: 2,
            },
            StreamEvent::Done,
        ];
        for size in [1, 3, 7, stream.len()] {
            let mut d = SseDecoder::default();
            let mut got = Vec::new();
            for c in stream.chunks(size) {
                got.extend(d.feed(c).unwrap());
            }
            assert_eq!(got, want, "chunks of {size}");
        }
    }

    #[test]
    fn error_events_and_garbage() {
        let mut d = SseDecoder::default();
        assert_eq!(
            d.feed(b"data: {\"error\":{\"message\":\"timed out\"}}\n")
                .unwrap(),
            vec![StreamEvent::Error("timed out".into())]
        );
        assert!(matches!(d.feed(b"data: nope\n"), Err(SseError::NotJson(_))));
    }
}
