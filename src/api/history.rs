//! `warden.v1.History`: time series, events and summaries over days. Specified in the
//! contract; every RPC answers UNIMPLEMENTED until the history store is built.
use tonic::{Request, Response, Status};

use super::ApiError;
use crate::proto::v1::{self as pb, history_server::History};

const HISTORY_STORE: &str = "history store";

#[derive(Clone, Default)]
pub struct HistoryService;

#[tonic::async_trait]
impl History for HistoryService {
    async fn query_history(
        &self,
        _request: Request<pb::QueryHistoryRequest>,
    ) -> Result<Response<pb::QueryHistoryResponse>, Status> {
        Err(ApiError::unimplemented(HISTORY_STORE).into())
    }

    async fn list_metrics(
        &self,
        _request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        Err(ApiError::unimplemented(HISTORY_STORE).into())
    }

    async fn list_events(
        &self,
        _request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        Err(ApiError::unimplemented(HISTORY_STORE).into())
    }

    async fn get_fleet_history_summary(
        &self,
        _request: Request<pb::GetFleetHistorySummaryRequest>,
    ) -> Result<Response<pb::GetFleetHistorySummaryResponse>, Status> {
        Err(ApiError::unimplemented(HISTORY_STORE).into())
    }
}
