//! The `berth.shim.v1` service.

use crate::exec::Execs;
use crate::exitfile::ExitRecord;
use crate::pty::Master;
use berth_proto::shim::shim_server::Shim;
use berth_proto::shim::{
    ExecInput, ExecOutput, ExecStateRequest, ExecStateResponse, KillRequest, KillResponse,
    ResizeRequest, ResizeResponse, ShutdownRequest, ShutdownResponse, StateRequest, StateResponse,
    StdinInput, StdinResponse, WaitRequest, WaitResponse,
};
use libcontainer::container::Container;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The shim's view of its one container.
pub struct ShimService {
    pub id: String,
    pub pid: i32,
    pub started_at_unix_nano: i64,
    pub state_root: PathBuf,
    pub shim_dir: PathBuf,
    /// Set once the init was reaped and the exit file written.
    pub exit: watch::Receiver<Option<ExitRecord>>,
    /// Asks main to stop serving and exit.
    pub shutdown: mpsc::Sender<()>,
    /// `docker exec` processes.
    pub execs: Arc<Execs>,
    /// The init's stdin (a pipe, or the terminal); None when not open or closed.
    pub stdin: Arc<tokio::sync::Mutex<Option<StdinWriter>>>,
    /// The init's terminal master (`-t`).
    pub terminal: Option<Master>,
}

/// Where stdin bytes for the init go.
pub type StdinWriter = Box<dyn AsyncWrite + Send + Unpin>;

type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

#[tonic::async_trait]
impl Shim for ShimService {
    async fn state(&self, _: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let exit = *self.exit.borrow();
        Ok(Response::new(StateResponse {
            id: self.id.clone(),
            pid: self.pid,
            status: if exit.is_some() { "exited" } else { "running" }.to_string(),
            exit_code: exit.map(|e| e.exit_code).unwrap_or(0),
            exited_at_unix_nano: exit.map(|e| e.exited_at_unix_nano).unwrap_or(0),
            started_at_unix_nano: self.started_at_unix_nano,
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let req = req.into_inner();
        if self.exit.borrow().is_some() {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let sig = Signal::try_from(req.signal)
            .map_err(|_| Status::invalid_argument(format!("invalid signal {}", req.signal)))?;
        if req.all {
            let mut c = Container::load(self.state_root.join(&self.id))
                .map_err(|e| Status::internal(crate::error_chain(&e)))?;
            let sig = libcontainer::signal::Signal::try_from(req.signal)
                .map_err(|_| Status::invalid_argument(format!("invalid signal {}", req.signal)))?;
            c.kill(sig, true)
                .map_err(|e| Status::internal(crate::error_chain(&e)))?;
        } else {
            nix::sys::signal::kill(Pid::from_raw(self.pid), sig)
                .map_err(|e| Status::internal(format!("kill {}: {e}", self.pid)))?;
        }
        Ok(Response::new(KillResponse {}))
    }

    async fn wait(&self, _: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let mut rx = self.exit.clone();
        let rec = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| Status::unavailable("shim is shutting down"))?
            .ok_or_else(|| Status::internal("no exit status"))?;
        Ok(Response::new(WaitResponse {
            exit_code: rec.exit_code,
            exited_at_unix_nano: rec.exited_at_unix_nano,
            oom_killed: false,
        }))
    }

    type ExecStream = ExecStream;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .and_then(|m| m.start)
            .ok_or_else(|| Status::invalid_argument("the first Exec message must carry start"))?;
        if self.exit.borrow().is_some() {
            // Docker's wording.
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.execs.clone().run(first, input, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn exec_state(
        &self,
        req: Request<ExecStateRequest>,
    ) -> Result<Response<ExecStateResponse>, Status> {
        let id = req.into_inner().exec_id;
        let (pid, exit) = self
            .execs
            .state(&id)
            .ok_or_else(|| Status::not_found(format!("No such exec instance: {id}")))?;
        Ok(Response::new(ExecStateResponse {
            pid,
            running: exit.is_none(),
            exit_code: exit.map(|e| e.exit_code).unwrap_or(0),
            exited_at_unix_nano: exit.map(|e| e.exited_at_unix_nano).unwrap_or(0),
        }))
    }

    async fn stdin(
        &self,
        req: Request<tonic::Streaming<StdinInput>>,
    ) -> Result<Response<StdinResponse>, Status> {
        let mut input = req.into_inner();
        let closed =
            || Status::failed_precondition(format!("container {} has no open stdin", self.id));
        if self.stdin.lock().await.is_none() {
            return Err(closed());
        }
        while let Some(msg) = input.message().await? {
            if !msg.data.is_empty() {
                // Locked per message: several attached clients interleave, as in Docker.
                let mut sink = self.stdin.lock().await;
                let w = sink.as_mut().ok_or_else(closed)?;
                if let Err(e) = w.write_all(&msg.data).await {
                    // The reader is gone (the init exited): nothing will read stdin again.
                    *sink = None;
                    return Err(Status::failed_precondition(format!(
                        "writing to the container's stdin: {e}"
                    )));
                }
            }
            if msg.close {
                // A terminal's master also carries the output: only a pipe is closed.
                if self.terminal.is_none() {
                    self.stdin.lock().await.take();
                }
                break;
            }
        }
        Ok(Response::new(StdinResponse {}))
    }

    async fn resize(
        &self,
        req: Request<ResizeRequest>,
    ) -> Result<Response<ResizeResponse>, Status> {
        let req = req.into_inner();
        let (h, w) = (
            crate::exec::clamp16(req.height),
            crate::exec::clamp16(req.width),
        );
        if !req.exec_id.is_empty() {
            self.execs.resize(&req.exec_id, h, w)?;
        } else {
            let master = self.terminal.as_ref().ok_or_else(|| {
                Status::failed_precondition(format!("container {} has no terminal", self.id))
            })?;
            if self.exit.borrow().is_some() {
                return Err(Status::failed_precondition(format!(
                    "container {} is not running",
                    self.id
                )));
            }
            master
                .resize(h, w)
                .map_err(|e| Status::internal(format!("resizing the terminal: {e}")))?;
        }
        Ok(Response::new(ResizeResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let root = self.state_root.join(&self.id);
        if root.exists() {
            match Container::load(root.clone()) {
                Ok(mut c) => {
                    if let Err(e) = c.delete(true) {
                        tracing::warn!(error = %crate::error_chain(&e), "libcontainer delete failed");
                        let _ = std::fs::remove_dir_all(&root);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "libcontainer load failed");
                    let _ = std::fs::remove_dir_all(&root);
                }
            }
        }
        // Give a force-killed init a moment to be reaped so the exit file exists when a
        // caller looks, then drop the dir.
        let mut rx = self.exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|e| e.is_some())).await;
        if let Err(e) = std::fs::remove_dir_all(&self.shim_dir) {
            tracing::warn!(error = %e, "removing the shim dir");
        }
        let _ = self.shutdown.try_send(());
        Ok(Response::new(ShutdownResponse {}))
    }
}
