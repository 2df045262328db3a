//! The one place that turns failures into Docker's HTTP codes and `{"message": ...}` bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error as the Docker client expects it: a status code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// A feature Berth does not have yet: 501, and the words "not supported" so that
    /// `docker inspect` without `--type` moves on to the next object kind.
    pub fn not_supported(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("berth: {what} is not supported yet"),
        )
    }
    /// A service that cannot be reached (or did not answer within the deadline).
    pub fn unavailable(service: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("berth: the {service} service is unavailable: {reason}"),
        )
    }

    /// Maps a gRPC status from `service` to Docker's HTTP code. Services already word
    /// their messages as Docker does (`No such container: x`), so the text passes through.
    pub fn from_status(service: &str, status: tonic::Status) -> Self {
        use tonic::Code;
        let msg = status.message().to_string();
        // A status that carries a source was made by the client's transport (the peer
        // died mid-call: "transport error", a reset stream), never by the service's own
        // handler: the service is unavailable, whatever code the transport chose.
        if std::error::Error::source(&status).is_some()
            && matches!(status.code(), Code::Unknown | Code::Internal)
        {
            return Self::unavailable(service, msg);
        }
        match status.code() {
            Code::NotFound => Self::not_found(msg),
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => Self::conflict(msg),
            Code::InvalidArgument | Code::OutOfRange => Self::bad_request(msg),
            Code::Unimplemented => Self::new(StatusCode::NOT_IMPLEMENTED, msg),
            Code::Unauthenticated => Self::new(StatusCode::UNAUTHORIZED, msg),
            Code::PermissionDenied => Self::new(StatusCode::FORBIDDEN, msg),
            Code::ResourceExhausted => Self::new(StatusCode::TOO_MANY_REQUESTS, msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                let reason = if msg.is_empty() {
                    format!("{:?}", status.code())
                } else {
                    msg
                };
                Self::unavailable(service, reason)
            }
            _ => Self::internal(msg),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        // The docker client compares the content type with `==`: no charset suffix.
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_docker_codes() {
        let cases = [
            (tonic::Code::NotFound, 404),
            (tonic::Code::AlreadyExists, 409),
            (tonic::Code::FailedPrecondition, 409),
            (tonic::Code::InvalidArgument, 400),
            (tonic::Code::Unavailable, 503),
            (tonic::Code::DeadlineExceeded, 503),
            (tonic::Code::Unimplemented, 501),
            (tonic::Code::Internal, 500),
        ];
        for (code, http) in cases {
            let e = ApiError::from_status("imaged", tonic::Status::new(code, "x"));
            assert_eq!(e.status.as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn unavailable_names_the_service() {
        let e = ApiError::from_status("netd", tonic::Status::unavailable("connection refused"));
        assert_eq!(
            e.message,
            "berth: the netd service is unavailable: connection refused"
        );
    }

    #[test]
    fn a_transport_failure_mid_call_is_the_service_being_unavailable() {
        let mut s = tonic::Status::unknown("transport error");
        s.set_source(std::sync::Arc::new(std::io::Error::other("stream reset")));
        let e = ApiError::from_status("imaged", s);
        assert_eq!(e.status, 503);
        assert_eq!(
            e.message,
            "berth: the imaged service is unavailable: transport error"
        );
        // The service's own internal error stays a 500.
        let e = ApiError::from_status("imaged", tonic::Status::internal("disk full"));
        assert_eq!(e.status, 500);
    }

    #[tokio::test]
    async fn body_is_docker_json_with_exact_content_type() {
        let resp = ApiError::not_found("No such container: x").into_response();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["message"], "No such container: x");
    }
}
