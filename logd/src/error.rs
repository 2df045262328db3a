//! logd's errors and their one mapping to gRPC status codes.

/// Everything that can go wrong in logd.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No log record for this container (never opened, or removed).
    #[error("no log for container {0}")]
    NotFound(String),
    /// The container ID cannot name a file.
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    /// Docker's wording for an unknown `--log-driver`.
    #[error("failed to get logging factory: logger: no log driver named '{0}' is registered")]
    UnknownDriver(String),
    /// Docker's wording for `docker logs` on a driver that keeps nothing (e.g. none).
    #[error("configured logging driver does not support reading")]
    ReadUnsupported,
    /// A `--log-opt` the driver refuses (Docker's wording).
    #[error("{0}")]
    BadOption(String),
    /// Docker's wording when neither stdout nor stderr is asked for.
    #[error("Bad parameters: you must choose at least one stream")]
    NoStream,
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state database failed.
    #[error("state database: {0}")]
    Db(#[from] sqlx::Error),
}

impl LogError {
    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<LogError> for tonic::Status {
    fn from(e: LogError) -> Self {
        let msg = e.to_string();
        match e {
            LogError::NotFound(_) => tonic::Status::not_found(msg),
            LogError::InvalidId(_)
            | LogError::UnknownDriver(_)
            | LogError::NoStream
            | LogError::BadOption(_) => tonic::Status::invalid_argument(msg),
            LogError::ReadUnsupported => tonic::Status::failed_precondition(msg),
            LogError::Io { .. } | LogError::Db(_) => tonic::Status::internal(msg),
        }
    }
}
