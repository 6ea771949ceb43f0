//! The running emulator: both listeners on a runtime of their own, in a background thread, so
//! that synchronous tests and async tests alike can start one and read its log.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Config;
use crate::requests::{Log, Plane, Request};
use crate::server::{Shared, router};
use crate::sts::is_role_arn;

/// A running emulator. Dropping it stops it and drops every open connection.
#[derive(Debug)]
pub struct Emulator {
    control: SocketAddr,
    data: SocketAddr,
    log: Log,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Checks the configuration (streams, role ARNs), binds both listeners on 127.0.0.1 and starts serving. Returns
    /// once they accept connections.
    pub fn start(config: Config) -> io::Result<Emulator> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if let Some(role) = config.roles.iter().find(|r| !is_role_arn(r)) {
            return Err(invalid(format!(
                "role {role:?} is not a role ARN (arn:aws:iam::<12 digits>:role/<name>)"
            )));
        }
        for (i, stream) in config.streams.iter().enumerate() {
            stream.check().map_err(invalid)?;
            if config.streams[..i].iter().any(|s| s.name == stream.name) {
                return Err(invalid(format!(
                    "stream {} is configured twice",
                    stream.name
                )));
            }
        }
        let control = std::net::TcpListener::bind(("127.0.0.1", config.control_port))?;
        let data = std::net::TcpListener::bind(("127.0.0.1", config.data_port))?;
        let (control_addr, data_addr) = (control.local_addr()?, data.local_addr()?);
        control.set_nonblocking(true)?;
        data.set_nonblocking(true)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kvs-emu")
            .enable_all()
            .build()?;
        let (control, data) = {
            let _context = runtime.enter();
            (
                TcpListener::from_std(control)?,
                TcpListener::from_std(data)?,
            )
        };
        let log = Log::default();
        let shared = Arc::new(Shared::new(
            config,
            log.clone(),
            format!("http://{data_addr}"),
            Instant::now(),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kvs-emu".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let control_app = router(Arc::clone(&shared), Plane::Control);
                    let data_app = router(shared, Plane::Data);
                    tokio::select! {
                        _ = async { axum::serve(control, control_app).await } => {}
                        _ = async { axum::serve(data, data_app).await } => {}
                        _ = stopped => {}
                    }
                });
                // Open GetMedia bodies never end by themselves: drop them rather than wait.
                runtime.shutdown_background();
            })?;
        Ok(Emulator {
            control: control_addr,
            data: data_addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The control-plane endpoint to configure a client with: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.control)
    }

    /// The data-plane endpoint GetDataEndpoint returns.
    pub fn data_endpoint(&self) -> String {
        format!("http://{}", self.data)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.snapshot()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; nothing left to stop then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the server thread has been reported on stderr already.
            let _ = thread.join();
        }
    }
}
