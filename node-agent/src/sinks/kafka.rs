//! Kafka output (being written: building one fails clearly until then).

use futures::future::BoxFuture;
use tailor_crds::collection::{OutputSpec, OutputType};

use crate::event::Event;
use crate::sinks::net::BuildError;
use crate::sinks::{Sink, SinkContext, SinkError};

#[derive(Debug)]
pub struct KafkaSink {
    name: String,
}

impl KafkaSink {
    pub fn new(spec: &OutputSpec, _ctx: &SinkContext) -> Result<Self, BuildError> {
        Err(BuildError::MissingSection { output: spec.name.clone(), type_: OutputType::Kafka })
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a mut self, _events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async {
            Err(SinkError::Failed { sink: self.name.clone(), message: "not built".into(), source: None })
        })
    }
}
