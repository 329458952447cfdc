//! `warden.v1.Logs`: log tails of workers, resolved to their pod or process.
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::ApiError;
use crate::proto::v1::{self as pb, logs_server::Logs};

#[derive(Clone, Default)]
pub struct LogsService;

type TailStream = Pin<Box<dyn Stream<Item = Result<pb::TailResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Logs for LogsService {
    type TailStream = TailStream;

    async fn tail(
        &self,
        _request: Request<pb::TailRequest>,
    ) -> Result<Response<TailStream>, Status> {
        Err(ApiError::unimplemented("runtimes (Kubernetes, local processes)").into())
    }
}
