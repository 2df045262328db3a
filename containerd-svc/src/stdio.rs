//! A container's stdin and terminal: `docker attach` input and window sizes, relayed to
//! the shim that holds them.

use crate::service::Service;
use crate::{Error, shim};
use berth_proto::containers::{AttachInput, ResizeRequest};
use berth_proto::shim::StdinInput;
use std::time::Duration;

/// How often a not-yet-started container is looked at while input waits for it (start
/// events also wake the wait).
const START_POLL: Duration = Duration::from_millis(50);
/// How long input that has ended waits for the container's start.
const START_AFTER_INPUT: Duration = Duration::from_secs(60);

/// The initial window size Docker's CLI sends in `HostConfig.ConsoleSize` (`[rows,
/// columns]`); None when absent or zero.
pub fn console_size(host_config_json: &[u8]) -> Option<(u32, u32)> {
    let v: serde_json::Value = serde_json::from_slice(host_config_json).ok()?;
    let size = v.get("ConsoleSize")?.as_array()?;
    let h = size.first()?.as_u64()?;
    let w = size.get(1)?.as_u64()?;
    (h > 0 && w > 0).then_some((h.min(u32::MAX as u64) as u32, w.min(u32::MAX as u64) as u32))
}

impl Service {
    /// Relays `input` (after its first message, `first`) to the container's stdin once it
    /// runs. Returns when the input ends, stdin was closed, or that run is over.
    pub async fn attach_stdin(
        &self,
        first: AttachInput,
        mut input: tonic::Streaming<AttachInput>,
    ) -> Result<(), Error> {
        // Input that arrives before the start is held, in order.
        let mut pending = std::collections::VecDeque::from([first.clone()]);
        let Some(id) = self
            .wait_running(&first.id, &mut input, &mut pending)
            .await?
        else {
            // The client left before the container ran: nothing to deliver.
            return Ok(());
        };
        let spec = self.resolve(&id).await?.spec()?;
        if !spec.open_stdin {
            // Docker's CLI does not send input then; a raw client gets told.
            return Err(Error::FailedPrecondition(format!(
                "container {id} was not created with an open stdin (-i)"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let call = tokio::spawn({
            let cfg = self.inner.cfg.clone();
            let id = id.clone();
            async move { shim::stdin(&cfg, &id, rx).await }
        });
        let input_done = pending.iter().any(|m| m.close_stdin);
        loop {
            let msg = match pending.pop_front() {
                Some(m) => m,
                None if input_done => break,
                None => match input.message().await {
                    Ok(Some(m)) => m,
                    // The client left: detach, leave stdin open.
                    Ok(None) | Err(_) => break,
                },
            };
            let close = msg.close_stdin;
            if (!msg.stdin.is_empty() || close)
                && tx
                    .send(StdinInput {
                        data: msg.stdin,
                        close,
                    })
                    .await
                    .is_err()
            {
                break;
            }
            if close {
                break;
            }
        }
        drop(tx);
        match call.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("stdin relay: {e}"))),
        }
    }

    /// The container's id once it is running; waits through `created` (and a restart's
    /// gap), holding what the client sends meanwhile in `pending`. None when there is
    /// nothing to deliver: the input ended empty, or ended and the container did not
    /// start within [`START_AFTER_INPUT`] (`docker run -i` starts right after attaching;
    /// a start that failed leaves the container created for ever). Fails when the
    /// container is removed or its current run ends before input could go in.
    async fn wait_running(
        &self,
        key: &str,
        input: &mut tonic::Streaming<AttachInput>,
        pending: &mut std::collections::VecDeque<AttachInput>,
    ) -> Result<Option<String>, Error> {
        let rec = self.resolve(key).await?;
        let first_started = rec.started_at.clone();
        let mut events = self.subscribe_events();
        let mut input_ended: Option<std::time::Instant> = None;
        loop {
            if input_ended.is_some_and(|t| t.elapsed() > START_AFTER_INPUT) {
                return Ok(None);
            }
            let rec = self.resolve(key).await?;
            match rec.state.as_str() {
                "running" => return Ok(Some(rec.id)),
                // Started and over since we began: the input came too late.
                "exited" | "dead" if rec.started_at != first_started => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {} is not running",
                        rec.id
                    )));
                }
                "removing" => return Err(Error::NotFound(key.to_string())),
                _ => {}
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(START_POLL) => {}
                msg = input.message(), if input_ended.is_none() => match msg {
                    Ok(Some(m)) => pending.push_back(m),
                    Ok(None) | Err(_) => {
                        let nothing = pending.iter().all(|m| m.stdin.is_empty() && !m.close_stdin);
                        if nothing {
                            return Ok(None);
                        }
                        input_ended = Some(std::time::Instant::now());
                    }
                },
            }
        }
    }

    /// Sets the window size of the container's terminal or of an exec's.
    pub async fn resize(&self, req: ResizeRequest) -> Result<(), Error> {
        let (container, exec_id) = if req.exec_id.is_empty() {
            let rec = self.resolve(&req.id).await?;
            let spec = rec.spec()?;
            if !spec.tty {
                return Err(Error::FailedPrecondition(format!(
                    "container {} has no terminal (-t)",
                    rec.id
                )));
            }
            if rec.state != "running" {
                // Docker's wording.
                return Err(Error::FailedPrecondition(format!(
                    "Container {} is not running",
                    rec.id
                )));
            }
            (rec.id, String::new())
        } else {
            let exec = self
                .inner
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| Error::NoSuchExec(req.exec_id.clone()))?;
            (exec.container_id, req.exec_id)
        };
        shim::resize(&self.inner.cfg, &container, &exec_id, req.height, req.width).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_size_comes_from_the_host_config() {
        assert_eq!(
            console_size(br#"{"ConsoleSize":[40,120]}"#),
            Some((40, 120))
        );
        assert_eq!(console_size(br#"{"ConsoleSize":[0,0]}"#), None);
        assert_eq!(console_size(br#"{}"#), None);
        assert_eq!(console_size(b"not json"), None);
    }
}
