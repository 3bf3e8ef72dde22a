//! How the API answers a failure: a status that says what kind of failure it is and a JSON body
//! `{"error": "..."}` with the worker's message, unchanged (the CLI prints it, tests grep it).
//! Which [`Error`] is which status is decided in one place, [`status_of`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::warn;

use crate::error::Error;

/// A request the API could not carry out.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// A request that could not be understood: the message says why.
    pub(crate) fn bad_request(why: impl std::fmt::Display) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, format!("bad request: {why}"))
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::new(status_of(&e), e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = %self.status, error = %self.message, "request failed");
        }
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// The status of a request that failed with `e`: 404 for an unknown tenant, 409 for a request
/// the tenants' state refuses, 400 for bad input, 500 for the rest. Every variant is named, so
/// that a new one is placed here on purpose.
pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::UnknownTenant(_) => StatusCode::NOT_FOUND,
        Error::TenantExists(_)
        | Error::PortHeld { .. }
        | Error::AlreadySwappedOut { .. }
        | Error::NotSwappedOut { .. }
        | Error::NotRunning { .. }
        | Error::CpuMismatch(_)
        | Error::SystemFileChanged { .. }
        | Error::DumpRefused { .. } => StatusCode::CONFLICT,
        Error::InvalidTenantName(_)
        | Error::NoCommand(_)
        | Error::BadLimits { .. }
        | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::NotRoot
        | Error::CriuMissing { .. }
        | Error::CriuTooOld { .. }
        | Error::Criu { .. }
        | Error::StartTimeout { .. }
        | Error::Start { .. }
        | Error::WholeImageIncomplete(_)
        | Error::Cgroup { .. }
        | Error::DiskQuota { .. }
        | Error::SwapOutNotCommitted { .. }
        | Error::KernelForward { .. }
        | Error::WorkerNotRunning { .. }
        | Error::WorkerAlreadyRunning { .. }
        | Error::AnswerUnencodable(_)
        | Error::RequestUnencodable(_)
        | Error::WorkerUnreachable { .. }
        | Error::PeerUnreachable { .. }
        | Error::RemotePeer { .. }
        | Error::HubNeedsApi
        | Error::HubNeedsPublicAddr
        | Error::HubNeedsName
        | Error::NoLease
        | Error::BadFilesArchive(_)
        | Error::NotAdoptable { .. }
        | Error::CheckpointNotCommitted { .. }
        | Error::RequestUnbuildable(_)
        | Error::Http { .. }
        | Error::Tls(_)
        | Error::BadAnswer { .. }
        | Error::NoRoute { .. }
        | Error::ApiTokenMissing { .. }
        | Error::ApiTokenEmpty { .. }
        | Error::TokenMissing
        | Error::ApiListen { .. }
        | Error::Remote(_)
        | Error::BadTenantRecord { .. }
        | Error::TenantRecordUnencodable { .. }
        | Error::BadActiveSet { .. }
        | Error::ActiveSetUnencodable { .. }
        | Error::BadPidFile { .. }
        | Error::TaskFailed { .. }
        | Error::Io { .. }
        | Error::Store(_)
        | Error::Pager(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_status_of_their_kind() {
        let cases = [
            (Error::UnknownTenant("a".into()), 404),
            (Error::TenantExists("a".into()), 409),
            (
                Error::PortHeld {
                    port: 1,
                    tenant: "a".into(),
                },
                409,
            ),
            (
                Error::NotSwappedOut {
                    name: "a".into(),
                    state: "running".into(),
                },
                409,
            ),
            (Error::InvalidTenantName("a/b".into()), 400),
            (Error::NoCommand("a".into()), 400),
            (Error::io("/x", std::io::Error::other("disk")), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e}");
        }
    }

    #[tokio::test]
    async fn the_body_carries_the_workers_message_unchanged() {
        let e = Error::UnknownTenant("ghost".into());
        let message = e.to_string();
        let response = Failure::from(e).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, serde_json::json!({ "error": message }));
    }
}
