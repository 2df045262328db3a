//! netd's errors and their single mapping to gRPC status codes.

/// Everything that can go wrong in netd.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A network or endpoint that does not exist (message is Docker's wording).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with an existing record.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but the current state forbids it (e.g. changing --bip while
    /// containers use the old subnet, or an exhausted subnet).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request is refused as Docker refuses it with 403 (removing a predefined
    /// network, an overlapping pool, an address in use).
    #[error("{0}")]
    Forbidden(String),
    /// Valid, but not built yet (501 at the API).
    #[error("{0}")]
    Unimplemented(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    /// Applying or reading nftables rules failed.
    #[error("nftables: {0}")]
    Nft(#[from] nftables::helper::NftablesError),
    /// A file or system call failed.
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    /// A namespace/mount syscall failed.
    #[error("{op}: {source}")]
    Sys { op: String, source: nix::Error },
    /// A stored value could not be parsed (database corrupted by hand?).
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl NetError {
    pub(crate) fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let op = op.into();
        move |source| NetError::Netlink { op, source }
    }

    pub(crate) fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let op = op.into();
        move |source| NetError::Io { op, source }
    }

    pub(crate) fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let op = op.into();
        move |source| NetError::Sys { op, source }
    }
}

/// Convenience alias.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

impl From<NetError> for tonic::Status {
    fn from(e: NetError) -> Self {
        let msg = e.to_string();
        match e {
            NetError::NotFound(_) => tonic::Status::not_found(msg),
            NetError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            NetError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            NetError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            NetError::Forbidden(_) => tonic::Status::permission_denied(msg),
            NetError::Unimplemented(_) => tonic::Status::unimplemented(msg),
            NetError::Db(_)
            | NetError::Netlink { .. }
            | NetError::Nft(_)
            | NetError::Io { .. }
            | NetError::Sys { .. }
            | NetError::Corrupt(_) => tonic::Status::internal(msg),
        }
    }
}
