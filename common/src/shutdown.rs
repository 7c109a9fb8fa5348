//! Shutdown on SIGTERM (what Kubernetes and `./dev down` send) or Ctrl-C.

use tokio::sync::watch;

/// Resolves when the process is asked to stop.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight work");
}

/// A shutdown flag that many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Returns the flag and a trigger that sets it; `on_signal` ties it to SIGTERM.
    pub fn new() -> (Self, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (Self { rx }, tx)
    }

    /// A flag set when the process receives SIGTERM or Ctrl-C.
    pub fn on_signal() -> Self {
        let (me, tx) = Self::new();
        tokio::spawn(async move {
            signal().await;
            let _ = tx.send(true);
        });
        me
    }

    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        // An error means the sender is gone, which only happens at exit.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}
