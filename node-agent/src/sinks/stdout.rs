//! The `stdout` output: NDJSON on the agent's standard output.

use futures::future::BoxFuture;
use std::io::Write;

use super::{Sink, SinkError};
use crate::encode::encode_ndjson;
use crate::event::Event;

pub struct StdoutSink {
    name: String,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(name: String) -> Self {
        Self { name, buf: Vec::new() }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.buf.clear();
            for e in events {
                encode_ndjson(e, &mut self.buf);
            }
            let buf = std::mem::take(&mut self.buf);
            let res = tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                let r = out.write_all(&buf).and_then(|_| out.flush());
                (buf, r)
            })
            .await;
            let res = match res {
                Ok((buf, r)) => {
                    self.buf = buf;
                    r
                }
                Err(join) => Err(std::io::Error::other(join.to_string())),
            };
            res.map_err(|e| SinkError::Failed {
                sink: self.name.clone(),
                message: "writing to stdout".into(),
                source: Some(Box::new(e)),
            })
        })
    }
}
