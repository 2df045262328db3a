//! Request bodies streamed into a gRPC call (`docker load`, `docker cp` into a
//! container): a body that breaks off cancels the call, so the service never acts on a
//! partial upload.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// The body's chunks as messages (after `first`, if given); the task ends Err when the
/// body could not be read to its end.
pub fn feed<M: Send + 'static>(
    body: Body,
    first: Option<M>,
    wrap: impl Fn(Bytes) -> M + Send + 'static,
) -> (ReceiverStream<M>, JoinHandle<Result<(), String>>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<M>(8);
    let mut data = body.into_data_stream();
    let task = tokio::spawn(async move {
        if let Some(m) = first
            && tx.send(m).await.is_err()
        {
            return Ok(());
        }
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if tx.send(wrap(chunk)).await.is_err() {
                break;
            }
        }
        Ok(())
    });
    (ReceiverStream::new(rx), task)
}

/// Awaits `call` while its body is fed; if the body breaks off first, the call is
/// dropped (cancelled) and the client gets a 400.
pub async fn call_fed<T>(
    call: impl std::future::Future<Output = Result<T, ApiError>>,
    mut fed: JoinHandle<Result<(), String>>,
) -> Result<T, ApiError> {
    tokio::pin!(call);
    tokio::select! {
        r = &mut call => {
            fed.abort();
            r
        }
        f = &mut fed => {
            if let Ok(Err(e)) = f {
                return Err(ApiError::bad_request(format!("reading the request body: {e}")));
            }
            call.await
        }
    }
}
